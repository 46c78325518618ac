# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
#
# Injected by tools/build_interfaces.sh as CMAKE_PROJECT_INCLUDE into the vendored interface
# packages (ros_interfaces/), so that their CMakeLists stay upstream's. Needed only with the
# ROS 2 PyPI wheels: their exported CMake targets (e.g. builtin_interfaces__rosidl_generator_py)
# name the wheel builder's Python and NumPy include folders (/opt/python/cp311-cp311/...), which
# do not exist here, and CMake refuses to generate a target that links to them. Our own
# generator_py target gets the local Python and NumPy include folders from find_package(Python3),
# so dropping the missing folders from the imported targets loses nothing.

function(_dvc_drop_missing_include_dirs)
  get_property(_targets DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  foreach(_target IN LISTS _targets)
    get_target_property(_dirs "${_target}" INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_kept "")
    foreach(_dir IN LISTS _dirs)
      # Keep generator expressions and folders that exist; drop absolute folders that do not.
      if(_dir MATCHES "^\\$<" OR NOT IS_ABSOLUTE "${_dir}" OR EXISTS "${_dir}")
        list(APPEND _kept "${_dir}")
      else()
        message(STATUS "wheel_fixups: ${_target}: dropping missing include folder ${_dir}")
      endif()
    endforeach()
    set_target_properties("${_target}" PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_kept}")
  endforeach()
endfunction()

# Run after the whole CMakeLists, once every find_package() has imported its targets.
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _dvc_drop_missing_include_dirs)
