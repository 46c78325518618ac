# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Compiled (numba, float32, CPU) kernels of depth from motion: plane-sweep ZNCC cost, SGM.

The Python modules (`sweep`, `estimator`) hold the API, the checks and the documentation of each
quantity; these kernels hold the per-pixel loops. Imported lazily (importing numba costs ~1 s);
machine code is cached on disk as in `geometry.pnp_compiled`.

Conventions: images are (H, W) float32 grey in [0, 1]; pixel (0, 0) is the centre of the top-left
pixel; a plane hypothesis is an inverse depth ``w`` [1/m] of the reference camera (fronto-parallel
plane z = 1/w); a reference pixel p maps into a source image at ``q = A p~ + b w`` (projective,
``A = K_s R K_r^-1``, ``b = K_s t``, (R, t) taking reference-camera points into the source camera;
evaluated in float32: within 4e-5 px of float64 at 320x240, in whole 8-float AVX2 vectors).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from dvc_perception.geometry.numba_jit import jit


@jit
def _box_sum(img, radius, out):
    """Sum of `img` (H, W) over (2r+1)^2 windows clipped to the image, into `out` (H, W)."""
    H, W = img.shape
    rows = np.empty((H, W), np.float32)
    for y in range(H):
        acc = np.float32(0.0)
        for x in range(min(radius, W)):
            acc += img[y, x]
        for x in range(W):
            if x + radius < W:
                acc += img[y, x + radius]
            if x - radius - 1 >= 0:
                acc -= img[y, x - radius - 1]
            rows[y, x] = acc
    acc = np.zeros(W, np.float32)  # the columns' running sums, row by row (vectorised)
    for y in range(min(radius, H)):
        for x in range(W):
            acc[x] += rows[y, x]
    for y in range(H):
        if y + radius < H:
            for x in range(W):
                acc[x] += rows[y + radius, x]
        if y - radius - 1 >= 0:
            for x in range(W):
                acc[x] -= rows[y - radius - 1, x]
        for x in range(W):
            out[y, x] = acc[x]


@jit
def window_counts(H, W, radius):
    """Pixels in each clipped (2r+1)^2 window, (H, W) float32."""
    ones = np.ones((H, W), np.float32)
    out = np.empty((H, W), np.float32)
    _box_sum(ones, radius, out)
    return out


@jit
def reference_stats(ref, radius):
    """Window mean (H, W) and 1/std (H, W, 0 where flat) of the reference image."""
    H, W = ref.shape
    n = window_counts(H, W, radius)
    s1 = np.empty((H, W), np.float32)
    s2 = np.empty((H, W), np.float32)
    _box_sum(ref, radius, s1)
    _box_sum(ref * ref, radius, s2)
    mean = s1 / n
    var = s2 / n - mean * mean
    inv_std = np.zeros((H, W), np.float32)
    for y in range(H):
        for x in range(W):
            if var[y, x] > 1e-6:
                inv_std[y, x] = 1.0 / np.sqrt(var[y, x])
    return mean, inv_std


@jit
def _project(A, b, s, w, x, y):
    """Where plane `w` maps reference pixel (x, y) in source `s`: (in front, u, v) [px].

    The one projection of the sweep (`sweep_cost` and `seen_at` agree exactly), all of `A`,
    `b`, `w`, `x`, `y` float32; u, v are 0 where the point is not in front of the source camera
    (qz <= 1e-6).
    """
    qz = A[s, 2, 0] * x + (A[s, 2, 1] * y + A[s, 2, 2] + b[s, 2] * w)
    front = qz > np.float32(1e-6)
    inv_qz = np.float32(1.0) / (qz if front else np.float32(1.0))
    u = (A[s, 0, 0] * x + (A[s, 0, 1] * y + A[s, 0, 2] + b[s, 0] * w)) * inv_qz
    v = (A[s, 1, 0] * x + (A[s, 1, 1] * y + A[s, 1, 2] + b[s, 1] * w)) * inv_qz
    zero = np.float32(0.0)
    return front, u if front else zero, v if front else zero


@intrinsic
def _bilinear8(typingctx, samples, index, fx, fy, out, x, at, step, ref, ref_at, sq):
    """Eight bilinear samples as `_warp_row`'s scalar loop, their squares and products.

    The samples into ``out[at + x + j]`` (j < 8), their squares into ``out[at + sq + x + j]``,
    their products with ``ref[ref_at + x + j]`` (`ref` float32, C-contiguous, taken flat) into
    ``out[at + 2 sq + x + j]``.

    ``i = index[x + j]``; samples ``samples[i]``, ``[i + 1]`` (one 8-byte load) and
    ``[i + step]``, ``[i + step + 1]`` (another), weights ``fx[x + j]``, ``fy[x + j]``; the
    same float32 operations in the same order as the scalar loop (no fused multiply-add):
    identical results. `samples`, `fx`, `fy`, `out` float32 and `index` int32 (1-D,
    contiguous); `x`, `at`, `step` integers. A pair of neighbours is one 64-bit load: half the
    loads of the scalar loop, and the arithmetic in one 8-wide vector (AVX2 gather
    instructions were no faster than the scalar loads here). Indices as `_warp_row` makes them
    (in bounds: no checks here).
    """
    if not (isinstance(ref, types.Array) and ref.layout == "C" and ref.dtype == types.float32):
        return None
    sig = types.void(samples, index, fx, fy, out, types.intp, types.intp, types.intp, ref,
                     types.intp, types.intp)

    def codegen(context, builder, signature, args):
        arrays = [context.make_array(t)(context, builder, v)
                  for t, v in zip(signature.args[:5], args[:5])]
        a_samples, a_index, a_fx, a_fy, a_out = arrays
        x, at, step = args[5], args[6], args[7]
        a_ref = context.make_array(signature.args[8])(context, builder, args[8])
        ref_at, sq = args[9], args[10]
        f32, f64 = ir.FloatType(), ir.DoubleType()
        i32, i64 = ir.IntType(32), ir.IntType(64)
        v8f, v8i, v4d = ir.VectorType(f32, 8), ir.VectorType(i32, 8), ir.VectorType(f64, 4)

        def load8(arr, vt):
            return builder.load(builder.bitcast(builder.gep(arr.data, [x]), vt.as_pointer()),
                                align=4)

        idx = load8(a_index, v8i)
        wx = load8(a_fx, v8f)
        wy = load8(a_fy, v8f)
        base = builder.ptrtoint(a_samples.data, i64)
        below = builder.mul(step, ir.Constant(i64, 4))  # bytes to the next row

        def pairs(shift):
            """(left, right) neighbours, (8,) each, of the eight pixels, `shift` bytes on."""
            halves = []
            for lanes in ((0, 1, 2, 3), (4, 5, 6, 7)):
                v = ir.Constant(v4d, ir.Undefined)
                for j, lane in enumerate(lanes):
                    i = builder.sext(builder.extract_element(idx, ir.Constant(i32, lane)), i64)
                    addr = builder.add(builder.add(base, builder.mul(i, ir.Constant(i64, 4))),
                                       shift)
                    pair = builder.load(builder.inttoptr(addr, f64.as_pointer()), align=4)
                    v = builder.insert_element(v, pair, ir.Constant(i32, j))
                halves.append(builder.bitcast(v, v8f))
            even = ir.Constant(v8i, [0, 2, 4, 6, 8, 10, 12, 14])
            odd = ir.Constant(v8i, [1, 3, 5, 7, 9, 11, 13, 15])
            return (builder.shuffle_vector(halves[0], halves[1], even),
                    builder.shuffle_vector(halves[0], halves[1], odd))

        s00, s01 = pairs(ir.Constant(i64, 0))
        s10, s11 = pairs(below)
        top = builder.fadd(s00, builder.fmul(wx, builder.fsub(s01, s00)))
        bot = builder.fadd(s10, builder.fmul(wx, builder.fsub(s11, s10)))
        res = builder.fadd(top, builder.fmul(wy, builder.fsub(bot, top)))
        rv = builder.load(builder.bitcast(builder.gep(a_ref.data, [builder.add(ref_at, x)]),
                                          v8f.as_pointer()), align=4)
        for value, k in ((res, 0), (builder.fmul(res, res), 1), (builder.fmul(res, rv), 2)):
            off = builder.add(builder.add(at, x), builder.mul(sq, ir.Constant(i64, k)))
            dst = builder.gep(a_out.data, [off])
            builder.store(value, builder.bitcast(dst, v8f.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _transpose8(typingctx, src, src_at, src_stride, dst, dst_at, dst_stride):
    """Copy an 8 x 8 block of float32 transposed, `src` to `dst`.

    ``dst[dst_at + i * dst_stride + j] = src[src_at + j * src_stride + i]`` for i, j < 8,
    offsets in elements of the C-contiguous arrays taken flat (any number of dimensions; no
    bounds checks).

    Eight 8-wide loads, a network of 24 shuffles, eight 8-wide stores, instead of 64 scalar
    loads and stores: the SGM's horizontal paths run on transposed rows of the volume.
    """
    sig = types.void(src, types.intp, types.intp, dst, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        a_src = context.make_array(signature.args[0])(context, builder, args[0])
        a_dst = context.make_array(signature.args[3])(context, builder, args[3])
        src_at, src_stride, dst_at, dst_stride = args[1], args[2], args[4], args[5]
        i64 = ir.IntType(64)
        v8f = ir.VectorType(ir.FloatType(), 8)

        def row(arr, at, stride, i):
            off = builder.add(at, builder.mul(stride, ir.Constant(i64, i)))
            ptr = builder.gep(arr.data, [off])
            return builder.bitcast(ptr, v8f.as_pointer())

        def shuffle(a, b, lanes):
            return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), 8),
                                                            lanes))

        r = [builder.load(row(a_src, src_at, src_stride, i), align=4) for i in range(8)]
        # rows (2k, 2k+1) interleaved: columns (0, 1, 4, 5) and (2, 3, 6, 7) of both
        t = []
        for k in range(4):
            t.append(shuffle(r[2 * k], r[2 * k + 1], [0, 8, 1, 9, 4, 12, 5, 13]))
            t.append(shuffle(r[2 * k], r[2 * k + 1], [2, 10, 3, 11, 6, 14, 7, 15]))
        # rows 4m .. 4m+3: columns (c, c + 4) for c = 0, 1, 2, 3
        u = []
        for m in range(2):
            lo, hi = t[4 * m: 4 * m + 2], t[4 * m + 2: 4 * m + 4]
            for a, b in ((lo[0], hi[0]), (lo[1], hi[1])):
                u.append(shuffle(a, b, [0, 1, 8, 9, 4, 5, 12, 13]))
                u.append(shuffle(a, b, [2, 3, 10, 11, 6, 7, 14, 15]))
        # u[c] (rows 0-3), u[4 + c] (rows 4-7), c = 0..3: columns c and c + 4
        for c in range(4):
            builder.store(shuffle(u[c], u[4 + c], [0, 1, 2, 3, 8, 9, 10, 11]),
                          row(a_dst, dst_at, dst_stride, c), align=4)
            builder.store(shuffle(u[c], u[4 + c], [4, 5, 6, 7, 12, 13, 14, 15]),
                          row(a_dst, dst_at, dst_stride, c + 4), align=4)
        return context.get_dummy_value()

    return sig, codegen


@jit
def _warp_row(samples, H, W, A, b, s, w, y, xs, index, fx, fy, valid, slot, warped, at, ref,
              yy, sq):
    """Warp reference row `y` from source `s` by plane `w`, bilinearly.

    Samples source `s` of `samples` (the (S, H, W) float32 sources, flat, then W + 2 zeros)
    where the plane maps each pixel of the row, into ``warped[at:at + W]``, their squares
    into ``warped[at + sq:]`` and their products with row `yy` (`y`) of `ref` (H, W) into
    ``warped[at + 2 sq:]``: a sample is 0 where the point
    is behind the source camera (the zeros), the clamped sample where it is outside the image;
    ``valid[s, slot]`` (W,) float32 is 1 where it is inside, else 0. `A`, `b`, `w`, `y` float32
    (`_project`); `xs` (W,) float32 column numbers; `index` (W,) int32, `fx`, `fy` (W,) float32
    scratch. The projection is a loop of its own, vectorised; the gather takes eight pixels at
    a time (`_bilinear8`), the last W % 8 one by one. No array views: each would cost an
    atomic reference count per call.
    """
    wm = np.float32(W - 1)
    hm = np.float32(H - 1)
    zero = np.float32(0.0)
    base = np.int32(s * H * W)
    zeros = np.int32(samples.shape[0] - W - 2)
    for x in range(W):
        f, u, v = _project(A, b, s, w, xs[x], y)
        inside = f & (u >= zero) & (v >= zero) & (u <= wm) & (v <= hm)
        valid[s, slot, x] = np.float32(1.0) if inside else np.float32(0.0)
        u = min(max(u, zero), wm)
        v = min(max(v, zero), hm)
        x0 = min(np.int32(u), np.int32(W - 2))
        y0 = min(np.int32(v), np.int32(H - 2))
        fx[x] = u - np.float32(x0)
        fy[x] = v - np.float32(y0)
        index[x] = base + y0 * np.int32(W) + x0 if f else zeros
    W8 = W - W % 8
    for x in range(0, W8, 8):
        _bilinear8(samples, index, fx, fy, warped, x, at, W, ref, yy * W, sq)
    step = np.uint64(W)
    one = np.uint64(1)
    uat = np.uint64(at)
    usq = np.uint64(sq)
    for x in range(W8, W):  # the last W % 8 pixels
        i = np.uint64(index[x])
        s00 = samples[i]
        s01 = samples[i + one]
        s10 = samples[i + step]
        s11 = samples[i + step + one]
        top = s00 + fx[x] * (s01 - s00)
        bot = s10 + fx[x] * (s11 - s10)
        val = top + fy[x] * (bot - top)
        ux = uat + np.uint64(x)
        warped[ux] = val
        warped[ux + usq] = val * val
        warped[ux + usq + usq] = val * ref[yy, x]


@jit
def _pair_sums(src, n, span, dst):
    """``dst[x] = src[x] + src[x + span]`` for x < n - span (`src`, `dst` (>= n,))."""
    us = np.uint64(span)
    for i in range(n - span):
        x = np.uint64(i)
        dst[x] = src[x] + src[x + us]


@jit
def _add_shifted(src, off, out, at, n):
    """``out[at + x] += src[x + off]`` for x < n."""
    uo = np.uint64(off)
    ua = np.uint64(at)
    for i in range(n):
        x = np.uint64(i)
        out[ua + x] += src[x + uo]


@jit
def _sum_shifted(row, src, off, out, at, n):
    """``out[at + x] = row[x] + src[x + off]`` for x < n."""
    uo = np.uint64(off)
    ua = np.uint64(at)
    for i in range(n):
        x = np.uint64(i)
        out[ua + x] = row[x] + src[x + uo]


@jit
def _window_sums7(row, out, at, n):
    """`_window_sums` for r = 3 in one pass, `row` (n + 6,) into ``out[at:at + n]``.

    ``out[at + x] = (row[x] + (row[x + 1] + row[x + 2])) + ((row[x + 3] + row[x + 4])
    + (row[x + 5] + row[x + 6]))``: the additions the passes make (1 + 2 + 4, each span a
    balanced sum), in the same order: identical sums, 7 loads and a store per element instead
    of four passes of 2 loads and a store each.
    """
    ua = np.uint64(at)
    one = np.uint64(1)
    two = np.uint64(2)
    three = np.uint64(3)
    four = np.uint64(4)
    five = np.uint64(5)
    six = np.uint64(6)
    for i in range(n):
        x = np.uint64(i)
        out[ua + x] = ((row[x] + (row[x + one] + row[x + two]))
                       + ((row[x + three] + row[x + four]) + (row[x + five] + row[x + six])))


@jit
def _window_sums(row, radius, spans, other, out, at, n):
    """``out[at + x] = sum(row[x:x + 2r + 1])`` for x < n, `row` (n + 2r,), vectorised.

    Sums of 2, then 4, 8, ... neighbours (into `spans`, `other` (n + 2r,) scratch, in turn);
    a window is the sum of the spans the binary digits of 2r + 1 give (r = 3: 1 + 2 + 4):
    about 2 log2(2r + 1) passes instead of 2r (a running sum would be one serial chain of
    additions along the row). The first pass that adds a span also copies `row` (the sum
    ``row + span`` in one pass: the same additions in the same order).
    """
    k = 2 * radius + 1
    if radius == 3:  # the sweep's default: the same sums in one pass, no scratch
        _window_sums7(row, out, at, n)
        return
    m = n + 2 * radius  # `spans` holds sums of `span` elements in [0, m - span + 1)
    _pair_sums(row, m, 1, spans)
    span = 2
    off = 1
    first = True
    while True:
        if k & span:
            if first:
                _sum_shifted(row, spans, off, out, at, n)
                first = False
            else:
                _add_shifted(spans, off, out, at, n)
            off += span
        if 2 * span > k:
            break
        _pair_sums(spans, m - span + 1, span, other)
        spans, other = other, spans
        span *= 2


@jit(parallel=True)
def sweep_cost(ref, ref_mean, ref_inv_std, srcs, A, b, inv_depths, radius, cost):
    """Mean over the sources of 1 - ZNCC of `ref` with each source warped by each plane.

    Args:
        ref: (H, W) float32 reference image.
        ref_mean: (H, W) its window means (`reference_stats`).
        ref_inv_std: (H, W) its window 1/std (`reference_stats`).
        srcs: (S, H, W) float32 source images.
        A: (S, 3, 3) per source, ``q = A p~ + b w`` (module docstring).
        b: (S, 3) per source.
        inv_depths: (D,) float32 plane inverse depths [1/m].
        radius: ZNCC window radius r [px].
        cost: (H, D, W) float32, receives the cost (allocated by the caller: numpy asks for
            huge pages, numba's allocator does not, and 4 KiB page faults on a fresh 20 MB
            volume per frame cost ~10 ms in a virtual machine).

    The cost in [0, 2] is the mean over the sources that see the
    (plane, pixel) of 1 - ZNCC over (2r+1)^2 windows clipped to the image; a source whose plane
    point is behind it or outside its image is skipped there; 1 (no information) where no
    source sees it or either window is flat. Runs per plane (in parallel), row by row: the
    warped rows of all sources, their squares and their products with the reference, laid end
    to end, get their horizontal window sums in one set of vectorised passes (`_window_sums`),
    written straight into a ring of the last 2r + 2 rows' sums (the row entering the windows
    and the row leaving them); the vertical window sums are running sums over the ring.
    """
    S, H, W = srcs.shape
    D = inv_depths.shape[0]
    k = 2 * radius + 1
    P = W + 2 * radius  # a row between r zeros at each end
    inv_n = np.float32(1.0) / window_counts(H, W, radius)
    zero = np.float32(0.0)
    one = np.float32(1.0)
    two = np.float32(2.0)
    min_var = np.float32(1e-6)  # var > min_var as var > 1e-6: no float32 lies in between
    xs = np.arange(W).astype(np.float32)
    A32 = A.astype(np.float32)
    b32 = b.astype(np.float32)
    samples = np.zeros(S * H * W + W + 2, np.float32)  # behind a camera: a sample of zeros
    samples[:S * H * W] = srcs.ravel()
    ref_c = np.ascontiguousarray(ref)  # read flat by `_bilinear8`
    for d in numba.prange(D):
        w = inv_depths[d]
        index = np.empty(W, np.int32)
        fx = np.empty(W, np.float32)
        fy = np.empty(W, np.float32)
        # the warped rows of every source, their squares, their products with the reference,
        # each between r zeros (windows clipped to the image), and their window sums
        rows = np.zeros(3 * S * P, np.float32)
        spans = np.empty(3 * S * P, np.float32)
        other = np.empty(3 * S * P, np.float32)
        n = 3 * S * P - 2 * radius  # window sums per row, the three kinds laid end to end
        # the rows' window sums, a ring of k + 1 rows: the row entering the windows and the
        # one leaving them both in it (zeros: the rows above the image)
        ring = np.zeros((k + 2) * n, np.float32)  # and a row of zeros
        valid = np.zeros((S, k, W), np.float32)  # 1: the source sees the pixel
        s1 = np.zeros((S, W), np.float32)
        s2 = np.zeros((S, W), np.float32)
        s12 = np.zeros((S, W), np.float32)
        acc = np.empty(W, np.float32)
        cnt = np.empty(W, np.float32)
        for yy in range(H + radius):  # yy: the row entering the windows
            slot = yy % k  # the slot of row yy - k, which leaves the windows
            if yy < H:
                for s in range(S):  # with the squares and the products with the reference
                    _warp_row(samples, H, W, A32, b32, s, w, np.float32(yy), xs, index, fx, fy,
                              valid, slot, rows, s * P + radius, ref_c, yy, S * P)
                _window_sums(rows, radius, spans, other, ring, (yy % (k + 1)) * n, n)
            # row yy's window sums in `ring` (below the image: the row of zeros at its end)
            new = np.uint64((yy % (k + 1) if yy < H else k + 1) * n)
            gone = np.uint64(((yy + 1) % (k + 1)) * n)  # row yy - k's
            y = yy - radius  # the output row: window rows y - r .. y + r are summed
            vslot = y % k
            for x in range(W):
                acc[x] = zero
                cnt[x] = zero
            for s in range(S):
                at1 = np.uint64(s * P)  # the source's sums in a row of `ring`
                at2 = np.uint64(S * P) + at1
                at12 = np.uint64(2 * S * P) + at1
                if y < 0:
                    for i in range(W):  # the ring starts zeroed: nothing leaves before row k
                        x = np.uint64(i)
                        s1[s, i] += ring[new + at1 + x] - ring[gone + at1 + x]
                        s2[s, i] += ring[new + at2 + x] - ring[gone + at2 + x]
                        s12[s, i] += ring[new + at12 + x] - ring[gone + at12 + x]
                    continue
                # the vertical sums, then the ZNCC from them in the same pass: float32
                # throughout, no short-circuit: whole vectors
                for i in range(W):
                    x = np.uint64(i)
                    a1 = s1[s, i] + (ring[new + at1 + x] - ring[gone + at1 + x])
                    a2 = s2[s, i] + (ring[new + at2 + x] - ring[gone + at2 + x])
                    a12 = s12[s, i] + (ring[new + at12 + x] - ring[gone + at12 + x])
                    s1[s, i] = a1
                    s2[s, i] = a2
                    s12[s, i] = a12
                    m = a1 * inv_n[y, i]
                    var = a2 * inv_n[y, i] - m * m
                    cov = a12 * inv_n[y, i] - m * ref_mean[y, i]
                    ris = ref_inv_std[y, i]
                    c = one - cov * ris / np.sqrt(var)
                    c = min(max(c, zero), two) if (var > min_var) & (ris > zero) else one
                    seen = valid[s, vslot, i]
                    acc[i] += c * seen
                    cnt[i] += seen
            if y < 0:
                continue
            for x in range(W):
                cost[y, d, x] = acc[x] / cnt[x] if cnt[x] > zero else one


@jit
def seen_at(index, A, b, inv_depths):
    """Sources (H, W) float32 that see each pixel's plane ``rint(index)`` (H, W) [planes].

    The same test as `sweep_cost`: in front of the source camera and inside its image. Serial
    (~0.5 ms at 320x240, less than a parallel loop costs to start on a busy machine), row by
    row: the planes' inverse depths looked up, then each source's projections in a loop of
    their own (vectorised).
    """
    H, W = index.shape
    D = inv_depths.shape[0]
    seen = np.zeros((H, W), np.float32)
    A32 = A.astype(np.float32)
    b32 = b.astype(np.float32)
    wm = np.float32(W - 1)
    hm = np.float32(H - 1)
    zero = np.float32(0.0)
    one = np.float32(1.0)
    xs = np.arange(W).astype(np.float32)
    w = np.empty(W, np.float32)
    for y in range(H):
        for x in range(W):
            w[x] = inv_depths[min(max(int(np.rint(index[y, x])), 0), D - 1)]
        fy = np.float32(y)
        for s in range(A.shape[0]):
            for x in range(W):
                f, u, v = _project(A32, b32, s, w[x], xs[x], fy)
                inside = f & (u >= zero) & (v >= zero) & (u <= wm) & (v <= hm)
                seen[y, x] += one if inside else zero
    return seen


@jit
def winner_depth(index, ratio, A, b, inv_depths):
    """Depth, confidence and sources at each pixel's winning plane, in one pass.

    `index` (H, W) float32 winning planes (sub-plane), `ratio` (H, W) float32 uniqueness ratios
    (`sgm_winner`), `A`, `b`, `inv_depths` as in `sweep_cost`. Returns

    - depth (H, W) float32 [m]: 1 / the inverse depth linearly interpolated at `index` between
      the planes', in float64 (``1 / np.interp(index, arange(D), inv_depths)``, numpy's
      arithmetic: equal to it);
    - seen (H, W) float32: `seen_at`;
    - confidence (H, W) float32: ``1 - ratio`` where seen > 0, else 0;
    - codes (H, W) int16: ``rint(16 index)`` where seen > 0, else -16 (`sweep.remove_speckles`'s
      input).
    """
    H, W = index.shape
    D = inv_depths.shape[0]
    depth = np.empty((H, W), np.float32)
    confidence = np.empty((H, W), np.float32)
    codes = np.empty((H, W), np.int16)
    seen = seen_at(index, A, b, inv_depths)
    one = np.float32(1.0)
    sixteen = np.float32(16.0)
    last = np.float64(D - 1)
    for y in range(H):
        for x in range(W):
            t = np.float64(index[y, x])
            if np.isnan(t):
                w = t
            elif t <= 0.0:
                w = np.float64(inv_depths[0])
            elif t >= last:
                w = np.float64(inv_depths[D - 1])
            else:
                j = int(t)  # xp = 0, 1, ... D - 1: xp[j] <= t < xp[j + 1]
                w = np.float64(inv_depths[j])
                if t != j:  # as numpy: slope (xp[j + 1] - xp[j] = 1), then slope * (t - xp[j])
                    slope = np.float64(inv_depths[j + 1]) - w
                    w = slope * (t - np.float64(j)) + w
            depth[y, x] = np.float32(1.0 / w)
            if seen[y, x] > 0:
                confidence[y, x] = one - ratio[y, x]
                codes[y, x] = np.int16(np.rint(index[y, x] * sixteen))
            else:
                confidence[y, x] = 0.0
                codes[y, x] = -16
    return depth, confidence, seen, codes


@jit
def _min_of(a, lo, hi):
    """``min(a[lo:hi])`` of `a` (n,) float32, hi > lo, in four independent chains.

    A scalar minimum waits for the one before it; one chain over 64 planes was the critical
    path of the horizontal SGM steps (numba does not vectorise a minimum reduction). The
    minimum is exact in any order.
    """
    m0 = a[lo]
    m1 = m0
    m2 = m0
    m3 = m0
    i = lo
    while i + 4 <= hi:
        m0 = min(m0, a[i])
        m1 = min(m1, a[i + 1])
        m2 = min(m2, a[i + 2])
        m3 = min(m3, a[i + 3])
        i += 4
    while i < hi:
        m0 = min(m0, a[i])
        i += 1
    return min(min(m0, m1), min(m2, m3))


@intrinsic
def _path_step8(typingctx, ct, ct_at, prev, cur, d, P1, jump, prev_mn, paths, paths_at, add):
    """`_path_step` and `_put_row` for the eight planes d .. d + 7; returns their minimum.

    ``cur[d + 1 + j] = ct[ct_at + j] + min(min(prev[d + 1 + j], prev[d + j] + P1),
    min(prev[d + 2 + j] + P1, jump)) - prev_mn`` (the scalar loop's float32 operations in the
    same order: identical), then ``paths[paths_at + j]`` gets it (`add`: ``+=``), j < 8. The
    minimum of the eight in vector registers (exact in any order): no serial chain of scalar
    minima. Arrays float32, C-contiguous, taken flat (no bounds checks).
    """
    for arr in (ct, prev, cur, paths):
        if not (isinstance(arr, types.Array) and arr.layout == "C"
                and arr.dtype == types.float32):
            return None
    if any(t != types.float32 for t in (P1, jump, prev_mn)):
        return None
    sig = types.float32(ct, types.intp, prev, cur, types.intp, types.float32, types.float32,
                        types.float32, paths, types.intp, types.boolean)

    def codegen(context, builder, signature, args):
        a_ct, a_prev, a_cur, a_paths = [context.make_array(signature.args[i])(context, builder,
                                                                             args[i])
                                        for i in (0, 2, 3, 8)]
        ct_at, d, paths_at, add = args[1], args[4], args[9], args[10]
        f32, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
        v8f, v8i = ir.VectorType(f32, 8), ir.VectorType(i32, 8)

        def splat(value):
            v = builder.insert_element(ir.Constant(v8f, ir.Undefined), value, ir.Constant(i32, 0))
            return builder.shuffle_vector(v, ir.Constant(v8f, ir.Undefined),
                                          ir.Constant(v8i, [0] * 8))

        def ptr8(arr, off):
            return builder.bitcast(builder.gep(arr.data, [off]), v8f.as_pointer())

        def vmin(a, b):
            return builder.select(builder.fcmp_ordered("<", a, b), a, b)

        p1, jmp, mn = splat(args[5]), splat(args[6]), splat(args[7])
        lower = builder.load(ptr8(a_prev, d), align=4)
        same = builder.load(ptr8(a_prev, builder.add(d, ir.Constant(i64, 1))), align=4)
        upper = builder.load(ptr8(a_prev, builder.add(d, ir.Constant(i64, 2))), align=4)
        best = vmin(vmin(same, builder.fadd(lower, p1)), vmin(builder.fadd(upper, p1), jmp))
        c = builder.load(ptr8(a_ct, ct_at), align=4)
        new = builder.fsub(builder.fadd(c, best), mn)
        builder.store(new, ptr8(a_cur, builder.add(d, ir.Constant(i64, 1))), align=4)
        dst = ptr8(a_paths, paths_at)
        old = builder.load(dst, align=4)
        builder.store(builder.select(add, builder.fadd(old, new), new), dst, align=4)
        m = new
        for lanes in ([4, 5, 6, 7] * 2, [2, 3] * 4, [1] * 8):
            m = vmin(m, builder.shuffle_vector(m, m, ir.Constant(v8i, lanes)))
        return builder.extract_element(m, ir.Constant(i32, 0))

    return sig, codegen


@jit
def _path_step(cost, x, prev, prev_mn, cur, P1, jump, lo, paths, add):
    """One SGM step into column x of `cost` (W, >= D) from `prev`, planes [lo, D); their min.

    ``cur[d] = C[d] + min(prev[d], prev[d+-1] + P1, min prev + P2) - min prev``, `jump` =
    ``min prev + P2``. `prev`, `cur` (D + 2,) are distinct buffers holding plane d at d + 1 and
    +inf at 0 and D + 1: no special ends. ``paths[x, d + 1]`` (`paths` (W, D + 2)) gets
    ``cur[d + 1]`` (`add`: ``+=``). `_path_step8` takes whole blocks of 8 planes; this the rest.
    """
    D = cur.shape[0] - 2
    ux = np.uint64(x)
    one = np.uint64(1)
    two = np.uint64(2)
    mn = np.float32(np.inf)
    for i in range(lo, D):
        d = np.uint64(i)
        best = min(min(prev[d + one], prev[d] + P1), min(prev[d + two] + P1, jump))
        c = cost[ux, d] + best - prev_mn
        cur[d + one] = c
        paths[ux, d + one] = paths[ux, d + one] + c if add else c
        mn = min(mn, c)
    return mn


@jit
def _put_row(dst, x, src, add):
    """``dst[x, 1:D + 1] = src[1:D + 1]`` (``+=`` with `add`); `dst` (W, D + 2), `src` (D + 2,)."""
    ux = np.uint64(x)
    one = np.uint64(1)
    for i in range(src.shape[0] - 2):
        d = np.uint64(i) + one
        dst[ux, d] = dst[ux, d] + src[d] if add else src[d]


@jit
def _horizontal_row(cost, P1, P2s, y, agg):
    """Both horizontal SGM paths of row `y` of `cost` (H, D, W), summed into ``agg[y]``.

    Per pixel over the planes, on the row transposed to (W, D) (8 x 8 blocks, `_transpose8`):
    the rightward path's costs, then the leftward path's added to them (``agg = right +
    left``), transposed back. A step takes 8 planes at a time (`_path_step8`).
    """
    _, D, W = cost.shape
    # Rows of D + 16 floats: a power-of-two stride (D = 64: 256 B) would map the column
    # writes of the transposition to a few cache sets.
    ct = np.empty((W, D + 16), np.float32)
    D8 = D - D % 8
    W8 = W - W % 8
    for d0 in range(0, D8, 8):  # 8 x 8 blocks, then what is left one by one
        for x0 in range(0, W8, 8):
            _transpose8(cost, (y * D + d0) * W + x0, W, ct, x0 * (D + 16) + d0, D + 16)
    for x in range(W):
        for d in range(D8 if x < W8 else 0, D):
            ct[x, d] = cost[y, d, x]
    paths = np.empty((W, D + 2), np.float32)
    prev = np.full(D + 2, np.inf, np.float32)
    cur = np.full(D + 2, np.inf, np.float32)
    for direction in range(2):
        left = direction == 1
        x = W - 1 if left else 0
        for d in range(D):  # a path starts with its cost alone
            prev[d + 1] = ct[x, d]
        mn = _min_of(prev, 1, D + 1)
        _put_row(paths, x, prev, left)
        for i in range(1, W):
            x = W - 1 - i if left else i
            jump = mn + P2s[y, x]
            # eight planes at a time (`_path_step8`), then the rest
            step_mn = _path_step(ct, x, prev, mn, cur, P1, jump, D8, paths, left)
            for d0 in range(0, D8, 8):
                step_mn = min(step_mn, _path_step8(ct, x * (D + 16) + d0, prev, cur, d0, P1,
                                                   jump, mn, paths, x * (D + 2) + 1 + d0, left))
            mn = step_mn
            prev, cur = cur, prev
    for d0 in range(0, D8, 8):
        for x0 in range(0, W8, 8):
            _transpose8(paths, x0 * (D + 2) + 1 + d0, D + 2, agg, (y * D + d0) * W + x0, W)
    for d in range(D):
        for x in range(W8 if d < D8 else 0, W):
            agg[y, d, x] = paths[x, d + 1]


@jit
def _row_paths(cost, P1, P2s, y, shift, first, prev, prev_mn, cur, cur_mn, x0, x1, agg, total,
               emit):
    """The SGM paths into row `y` of `cost` (H, D, W), columns [x0, x1), vectorised over x.

    They come from the row before (the row after, going up).
    `shift` (-1, 0, 1): the path's step in x; `prev` (D, W), `prev_mn` (W,): the previous row's
    path costs and their minima; `cur`, `cur_mn` receive this row's. A path starts (its cost
    alone) on the `first` row and where x - shift is outside the image. Unsigned column
    indices: no negative-index wrap-around in the loops, which then vectorise. `emit` 1: the
    path costs are also added to ``agg[y]`` ((H, D, W)), 2: ``agg[y] + cur`` goes into `total`
    (D, W); 0: neither (the caller sums several paths). Done in the pass that takes the
    minima, plane by plane, while the plane's costs are in the cache.
    """
    _, D, W = cost.shape
    lo = x1  # the columns [lo, hi) continue a path
    hi = x1
    if not first:
        lo = min(max(x0, shift), x1)
        hi = max(min(x1, W + shift), lo)
    u0 = np.uint64(x0)
    ulo = np.uint64(lo)
    uhi = np.uint64(hi)
    back = np.uint64(-shift)  # xp = x - shift, modulo 2^64
    for i in range(x1 - x0):
        cur_mn[u0 + np.uint64(i)] = np.inf
    for d in range(D):
        for i in range(lo - x0):
            x = u0 + np.uint64(i)
            cur[d, x] = cost[y, d, x]
        for i in range(x1 - hi):
            x = uhi + np.uint64(i)
            cur[d, x] = cost[y, d, x]
        dm = max(d - 1, 0)  # at the ends prev[d] + P1 >= prev[d] stands in for the neighbour
        dp = min(d + 1, D - 1)
        for i in range(hi - lo):
            x = ulo + np.uint64(i)
            xp = x + back
            m = prev_mn[xp]
            best = min(min(prev[d, xp], prev[dm, xp] + P1), min(prev[dp, xp] + P1, m + P2s[y, x]))
            cur[d, x] = cost[y, d, x] + best - m
        if emit == 1:
            for i in range(x1 - x0):
                x = u0 + np.uint64(i)
                v = cur[d, x]
                cur_mn[x] = min(cur_mn[x], v)
                agg[y, d, x] = agg[y, d, x] + v
        elif emit == 2:
            for i in range(x1 - x0):
                x = u0 + np.uint64(i)
                v = cur[d, x]
                cur_mn[x] = min(cur_mn[x], v)
                total[d, x] = agg[y, d, x] + v
        else:
            for i in range(x1 - x0):
                x = u0 + np.uint64(i)
                cur_mn[x] = min(cur_mn[x], cur[d, x])


@jit
def _winner_row(total, x0, x1, y, idx, ratio):
    """Winner of the aggregated costs `total` (D, W) of row `y`, columns [x0, x1).

    Into `idx`, `ratio` (H, W); vectorised over the columns. See `winner_take_all`.
    """
    D = total.shape[0]
    n = x1 - x0
    u0 = np.uint64(x0)
    best = np.empty(n, np.float32)
    second = np.full(n, np.inf, np.float32)
    k = np.zeros(n, np.int64)
    for i in range(n):
        best[i] = total[0, u0 + np.uint64(i)]
    for d in range(1, D):  # the first minimum
        for i in range(n):
            c = total[d, u0 + np.uint64(i)]
            k[i] = d if c < best[i] else k[i]
            best[i] = min(best[i], c)
    for d in range(D):  # the best outside the winner's neighbours
        for i in range(n):
            c = total[d, u0 + np.uint64(i)]
            if abs(d - k[i]) > 1:
                second[i] = min(second[i], c)
    for i in range(n):
        x = u0 + np.uint64(i)
        kk = k[i]
        b = best[i]
        off = 0.0
        if 0 < kk < D - 1:
            den = total[kk - 1, x] - 2.0 * b + total[kk + 1, x]
            if den > 1e-9:
                off = 0.5 * (total[kk - 1, x] - total[kk + 1, x]) / den
        idx[y, x] = kk + off
        s = second[i]
        ratio[y, x] = b / s if s < np.inf and s > 0 else 1.0


@jit
def _vertical_chunk(cost, P1, P2s, agg, diagonals, x0, x1, winner, idx, ratio, horizontal):
    """The downward, then the upward SGM paths of the columns [x0, x1) of `cost` (H, D, W).

    Vertical paths, with `diagonals` also diagonal ones; added to `agg` (H, D, W). With
    `winner`, the upward pass takes the winner of each row it finishes into `idx`, `ratio`
    (H, W) instead of adding. With `horizontal` (the chunk spans the whole width), the
    downward pass first writes each row's horizontal paths into ``agg[y]`` (`_horizontal_row`)
    and adds to them while the row is in the cache (the same sums as a separate pass over the
    volume: one write and one read of `agg` less).
    """
    H, D, W = cost.shape
    nd = 3 if diagonals else 1
    prev = np.empty((nd, D, W), np.float32)
    cur = np.empty((nd, D, W), np.float32)
    prev_mn = np.empty((nd, W), np.float32)
    cur_mn = np.empty((nd, W), np.float32)
    total = np.empty((D, W), np.float32)
    u0 = np.uint64(x0)
    for direction in range(2):
        down = direction == 0
        last = winner and not down
        for i in range(H):
            y = i if down else H - 1 - i
            if horizontal and down:
                _horizontal_row(cost, P1, P2s, y, agg)
            # one path: its costs go into agg (total) as they are made
            emit = 0 if diagonals else (2 if last else 1)
            for j in range(nd):
                shift = 0 if j == 0 else (1 if j == 1 else -1)  # the path's step in x
                _row_paths(cost, P1, P2s, y, shift, i == 0, prev[j], prev_mn[j], cur[j],
                           cur_mn[j], x0, x1, agg, total, emit)
            for d in range(D if diagonals else 0):
                for ii in range(x1 - x0):
                    x = u0 + np.uint64(ii)
                    t = agg[y, d, x] + cur[0, d, x]
                    for j in range(1, nd):
                        t += cur[j, d, x]
                    if last:
                        total[d, x] = t
                    else:
                        agg[y, d, x] = t
            if last:
                _winner_row(total, x0, x1, y, idx, ratio)
            prev, cur = cur, prev
            prev_mn, cur_mn = cur_mn, prev_mn


@jit(parallel=True)
def _sgm_parallel(cost, P1, P2s, diagonals, winner, chunks, agg, idx, ratio):
    """The parallel loops of the SGM.

    Rows for the horizontal paths, `chunks` chunks of columns for the vertical ones (one chunk
    with diagonals: their paths cross the chunks). Best one chunk per thread: a chunk walks its
    part of every row of the volume, and narrow chunks touch every memory page of it once per
    chunk (page walks are slow in a virtual machine: 10 chunks of 32 columns took 1.6 times as
    long as one of 320 on one thread). With one chunk, the horizontal paths run inside the
    vertical pass, row by row (`_vertical_chunk`); the sums are the same.
    """
    H, D, W = cost.shape
    chunk = W if diagonals else -(-W // (16 * max(chunks, 1))) * 16  # whole vectors
    n_chunks = (W + chunk - 1) // chunk
    fused = n_chunks == 1
    if not fused:
        for y in numba.prange(H):
            _horizontal_row(cost, P1, P2s, y, agg)
    for c in numba.prange(n_chunks):
        _vertical_chunk(cost, P1, P2s, agg, diagonals, c * chunk, min(W, (c + 1) * chunk),
                        winner, idx, ratio, fused)


def _sgm(cost: np.ndarray, P1: np.float32, P2s: np.ndarray, diagonals: bool, winner: bool,
         chunks: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The summed path costs (H, D, W) (`winner` False) or the winner and ratio (`winner`).

    The volume is allocated here, by numpy (see `sweep_cost`'s `cost`).
    """
    H, D, W = cost.shape
    agg = np.empty((H, D, W), np.float32)
    idx = np.zeros((H, W), np.float32)
    ratio = np.ones((H, W), np.float32)
    chunks = numba.get_num_threads() if chunks is None else chunks
    _sgm_parallel(cost, P1, P2s, diagonals, winner, chunks, agg, idx, ratio)
    return agg, idx, ratio


def sgm(cost: np.ndarray, P1: np.float32, P2s: np.ndarray, diagonals: bool,
        chunks: int | None = None) -> np.ndarray:
    """Semi-global aggregation of `cost` (H, D, W) along 4 paths, or 8 with `diagonals`.

    P1 penalises a change of one plane between neighbours, P2s (H, W) a larger jump (lowered at
    image edges by the caller). Returns the summed path costs (H, D, W). `chunks`: column
    chunks of the vertical paths (default: numba's thread count).
    """
    return _sgm(cost, P1, P2s, diagonals, False, chunks)[0]


def sgm_winner(cost: np.ndarray, P1: np.float32, P2s: np.ndarray, diagonals: bool,
               chunks: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`winner_take_all` of `sgm`, fused into the SGM's last (upward) pass.

    That pass takes the winners of each row it finishes instead of writing the row back.
    Returns the winner (H, W) float32 [planes] and the uniqueness ratio (H, W) float32.
    """
    _, idx, ratio = _sgm(cost, P1, P2s, diagonals, True, chunks)
    return idx, ratio


@jit(parallel=True)
def winner_take_all(agg):
    """Best plane (H, W) float32 of `agg` (H, D, W), parabola-refined, and uniqueness ratio.

    The ratio is best / second best outside the winner's +-1 neighbours (1: ambiguous).
    """
    H, D, W = agg.shape
    idx = np.empty((H, W), np.float32)
    ratio = np.ones((H, W), np.float32)
    for y in numba.prange(H):
        _winner_row(agg[y], 0, W, y, idx, ratio)
    return idx, ratio


@jit
def forward_warp(inv_depth, variance, age, A, b):
    """Move an inverse-depth map into another camera: z-buffered nearest splat.

    `inv_depth`, `variance`, `age` (h, w) of camera P (inverse depth NaN or <= 0: unknown); a
    pixel (x, y) of P with inverse depth w maps to the new camera at ``q = A [x, y, 1] + b w``
    (A = K R K^-1, b = K t, (R, t) taking P's points into the new camera), its new inverse
    depth being ``w / q_z``. The variance is propagated to first order, ``(w_new / w)^4``
    (d w_new / d w = (w_new / w)^2: exact for a pure translation, approximate with rotation);
    the age is carried unchanged. Returns the new inverse depth, variance and age (h, w), NaN
    (age -1) where nothing landed; the nearest point wins.
    """
    H, W = inv_depth.shape
    out = np.full((H, W), np.nan, np.float32)
    out_var = np.full((H, W), np.nan, np.float32)
    out_age = np.full((H, W), -1, np.int32)
    # per row: the projections in a loop of their own (vectorised), then the splats in order
    us = np.empty(W, np.int64)
    vs = np.empty(W, np.int64)
    ws = np.empty(W, np.float64)
    lands = np.zeros(W, np.bool_)
    for y in range(H):
        for x in range(W):
            w = inv_depth[y, x]
            known = w > 0.0
            w = w if known else np.float32(0.0)  # NaN: no NaN in the arithmetic
            qx = A[0, 0] * x + A[0, 1] * y + A[0, 2] + b[0] * w
            qy = A[1, 0] * x + A[1, 1] * y + A[1, 2] + b[1] * w
            qz = A[2, 0] * x + A[2, 1] * y + A[2, 2] + b[2] * w
            front = known & (qz > 1e-6)
            qz = qz if front else 1.0
            u = int(np.floor(qx / qz + 0.5))
            v = int(np.floor(qy / qz + 0.5))
            us[x] = u
            vs[x] = v
            ws[x] = w / qz
            lands[x] = front & (u >= 0) & (v >= 0) & (u < W) & (v < H)
        for x in range(W):
            if not lands[x]:
                continue
            u = us[x]
            v = vs[x]
            w_new = ws[x]
            if np.isnan(out[v, u]) or w_new > out[v, u]:
                ratio = w_new / inv_depth[y, x]
                out[v, u] = w_new
                out_var[v, u] = variance[y, x] * ratio * ratio * ratio * ratio
                out_age[v, u] = age[y, x]
    return out, out_var, out_age


@jit
def fuse_prior(depth, measured, meas_var, p, p_var, p_age, max_age, one, nine):
    """Inverse-variance fusion of a measurement with a prior, per pixel (`estimator._fuse`).

    `depth` (H, W) float32 [m] and `measured` (H, W) bool: the measurement is ``1 / depth``
    (float32) with variance `meas_var` (float32) where measured. `p`, `p_var` (H, W) the prior's
    inverse depth and variance (float32, or float64 after a scale change; NaN unknown), `p_age`
    (H, W) int32 its age; `one`, `nine`: 1 and 9 in the prior's dtype. Where both are known and
    agree within 3 combined stds, the inverse-variance mean; where only the prior is known and
    younger than `max_age`, the prior (age + 1); else the measurement (age 0; NaN and -1 where
    unmeasured). Each value as numpy computes `_fuse`'s expressions (the measurement's terms in
    float32, the prior's in its dtype, promoted where they meet). Returns inverse depth,
    variance (float32) and age (int32), (H, W).
    """
    H, W = depth.shape
    inv = np.empty((H, W), np.float32)
    var = np.empty((H, W), np.float32)
    age = np.empty((H, W), np.int32)
    one32 = np.float32(1.0)
    nan32 = np.float32(np.nan)
    for y in range(H):
        for x in range(W):
            pv = p[y, x]
            known = np.isfinite(pv)
            if measured[y, x]:
                m = one32 / depth[y, x]
                mv = meas_var
                e = m - pv
                if known and e * e <= nine * (mv + p_var[y, x]):
                    fv = one / (one32 / mv + one / p_var[y, x])
                    inv[y, x] = np.float32(fv * (m / mv + pv / p_var[y, x]))
                    var[y, x] = np.float32(fv)
                else:
                    inv[y, x] = m
                    var[y, x] = mv
                age[y, x] = 0
            elif known and p_age[y, x] < max_age:
                inv[y, x] = np.float32(pv)
                var[y, x] = np.float32(p_var[y, x])
                age[y, x] = p_age[y, x] + 1
            else:
                inv[y, x] = nan32
                var[y, x] = nan32
                age[y, x] = -1
    return inv, var, age
