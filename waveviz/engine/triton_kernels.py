"""The NWM recurrence's Triton kernels (CUDA, float32), used by `backends.TritonBackend`.

Imported only when triton is installed (`backends.load_triton_kernels`). A program owns a block of
pixels of one image across all C channels: a (CP, BP) tile, CP = C rounded up to a power of two. The
3×3 coupling accumulates outer products W[:, ci, dy, dx] ⊗ y[ci, shifted pixels], so each input is
loaded once per tap, not once per output channel. Small images (C·H·W ≤ PERSISTENT_MAX) run
"persistent": one program per image walks every step of a segment with a barrier between steps, so
the state stays in the SM's caches and a segment is one launch. Larger images launch one grid of
(image, pixel block) programs per step. The backward writes s_t for the segment and leaves ∂W to one
cuDNN weight-gradient call. The same algorithm as the C kernel (csrc/nwm.h).
"""
import triton
import triton.language as tl


@triton.jit
def _tri_tanh(x):  # the C kernel's formula: odd polynomial near 0, 1 − 2/(e^{2|x|} + 1) elsewhere
    ax = tl.minimum(tl.abs(x), 44.0)
    xc = tl.where(x < 0, -ax, ax)
    s = xc * xc
    p = ((((-5.70498872745e-3 * s + 2.06390887954e-2) * s - 5.37397155531e-2) * s
          + 1.33314422036e-1) * s - 3.33332819422e-1) * s * xc + xc
    q = 1.0 - 2.0 / (tl.exp(2.0 * ax) + 1.0)
    r = tl.where(ax < 0.625, p, tl.where(x < 0, -q, q))
    return tl.where(x != x, x, r)


@triton.jit
def _tri_tap(i, d, n, TRANSPOSED: tl.constexpr):
    """The row (or column) that tap d ∈ {0, 1, 2} of the circular 3×3 stencil reads for output row
    i of n: i + d − 1, or for the transposed convolution i − d + 1, wrapped around."""
    if TRANSPOSED:
        j = (i - d + n + 1) % n
    else:
        j = (i + d + n - 1) % n
    return j


@triton.jit
def _tri_conv(src, Wr, rows, cm, pix, pm, C, H, W, TRANSPOSED: tl.constexpr, CP: tl.constexpr, BP: tl.constexpr):
    """(CP, BP) tile of W ⊛ src (rows = output channels) or, TRANSPOSED, of Wᵀ ⊛ src (rows =
    input channels of W), circular, at pixels `pix` of one image; src is (C, H, W).
    With 16 or more channels each tap is a (CP × CP)·(CP × BP) product on the tensor cores in
    3×TF32 (float32 accuracy); below that, outer products on the CUDA cores."""
    h, x = pix // W, pix % W
    acc = tl.zeros([CP, BP], dtype=tl.float32)
    # One branch is compiled (CP is a constexpr); no early return, which Triton cannot compile
    # when the code after it re-assigns a name with another shape.
    if CP >= 16:
        ks = tl.arange(0, CP)  # the summed channel
        km = ks < C
        for dy in tl.static_range(3):
            hh = _tri_tap(h, dy, H, TRANSPOSED)
            for dx in tl.static_range(3):
                xx = _tri_tap(x, dx, W, TRANSPOSED)
                if TRANSPOSED:
                    wt = tl.load(Wr + ((ks[None, :] * C + rows[:, None]) * 3 + dy) * 3 + dx,
                                 mask=cm[:, None] & km[None, :], other=0.0)
                else:
                    wt = tl.load(Wr + ((rows[:, None] * C + ks[None, :]) * 3 + dy) * 3 + dx,
                                 mask=cm[:, None] & km[None, :], other=0.0)
                tile = tl.load(src + ks[:, None] * H * W + (hh * W + xx)[None, :], mask=km[:, None] & pm[None, :], other=0.0)
                acc = tl.dot(wt, tile, acc, input_precision="tf32x3")
    else:
        for k in range(C):
            for dy in tl.static_range(3):
                hh = _tri_tap(h, dy, H, TRANSPOSED)
                for dx in tl.static_range(3):
                    xx = _tri_tap(x, dx, W, TRANSPOSED)
                    if TRANSPOSED:
                        wv = tl.load(Wr + ((k * C + rows) * 3 + dy) * 3 + dx, mask=cm, other=0.0)
                    else:
                        wv = tl.load(Wr + ((rows * C + k) * 3 + dy) * 3 + dx, mask=cm, other=0.0)
                    v = tl.load(src + k * H * W + hh * W + xx, mask=pm, other=0.0)
                    acc += wv[:, None] * v[None, :]
    return acc


@triton.jit
def _tri_program(C, H, W, CP: tl.constexpr):
    """This program's image b (int64), H·W, C·H·W, the channel rows 0 … CP−1 and their mask (< C)."""
    b = tl.program_id(0).to(tl.int64)
    HW = H * W
    rows = tl.arange(0, CP)
    return b, HW, C * HW, rows, rows < C


@triton.jit
def _tri_pixels(tiles, t, HW, BP: tl.constexpr):
    """Tile t of this program's pixel block (program_id(1)): the flat pixel indices and their mask."""
    pix = (tl.program_id(1) * tiles + t) * BP + tl.arange(0, BP)
    return pix, pix < HW


@triton.jit
def _tri_state(Yin, Zin, Y, Z, b, j, CHW, ysb, ysj, zsb, zsj):
    """Where the state (y, z) before step j of image b is: the inputs for j = 0, else step j − 1's."""
    if j == 0:
        yp = Yin + b * CHW
        zp = Zin + b * CHW
    else:
        yp = Y + b * ysb + (j - 1) * ysj
        zp = Z + b * zsb + (j - 1) * zsj
    return yp, zp


@triton.jit
def nwm_fwd(Yin, Zin, OM, AL, Wr, Y, Z, dt, n, j0, tiles, ysb, ysj, zsb, zsj, C, H, W,
            CP: tl.constexpr, BP: tl.constexpr):
    """Steps j0 … j0+n-1 of the segment for image program_id(0), pixel blocks program_id(1)·tiles …"""
    b, HW, CHW, rows, cm = _tri_program(C, H, W, CP)
    for jj in range(n):
        j = j0 + jj
        yp, zp = _tri_state(Yin, Zin, Y, Z, b, j, CHW, ysb, ysj, zsb, zsj)
        for t in range(tiles):
            pix, pm = _tri_pixels(tiles, t, HW, BP)
            o = rows[:, None] * HW + pix[None, :]
            m = cm[:, None] & pm[None, :]
            th = _tri_tanh(_tri_conv(yp, Wr, rows, cm, pix, pm, C, H, W, False, CP, BP))
            yv = tl.load(yp + o, mask=m, other=0.0)
            zv = tl.load(zp + o, mask=m, other=0.0)
            om = tl.load(OM + b * CHW + o, mask=m, other=0.0)
            al = tl.load(AL + b * CHW + o, mask=m, other=0.0)
            znew = zv + dt * ((th - om * yv) - al * zv)
            tl.store(Z + b * zsb + j * zsj + o, znew, mask=m)
            tl.store(Y + b * ysb + j * ysj + o, yv + dt * znew, mask=m)
        tl.debug_barrier()  # (persistent) step j is written before step j + 1 reads neighbours


@triton.jit
def nwm_bwd(Yin, Zin, OM, AL, Wr, Y, Z, G, S, YB, ZB, DOM, DAL, dt, n, jtop, tiles,
            ysb, ysj, zsb, zsj, gsb, gsj, ssb, ssj, C, H, W, PHASE: tl.constexpr, CP: tl.constexpr, BP: tl.constexpr):
    """Adjoint steps jtop, jtop-1, … (n of them). PHASE 0 does both halves of each step with
    barriers (persistent); 1 only the pointwise half (s_t, ∂ω, ∂α, z̄, ȳ); 2 only ȳ += Wᵀ ⊛ s_t."""
    b, HW, CHW, rows, cm = _tri_program(C, H, W, CP)
    for jj in range(n):
        j = jtop - jj
        yp, zp = _tri_state(Yin, Zin, Y, Z, b, j, CHW, ysb, ysj, zsb, zsj)
        sp = S + b * ssb + j * ssj
        if PHASE != 2:
            for t in range(tiles):
                pix, pm = _tri_pixels(tiles, t, HW, BP)
                o = rows[:, None] * HW + pix[None, :]
                m = cm[:, None] & pm[None, :]
                th = _tri_tanh(_tri_conv(yp, Wr, rows, cm, pix, pm, C, H, W, False, CP, BP))
                i = b * CHW + o
                yhat = tl.load(YB + i, mask=m, other=0.0) + tl.load(G + b * gsb + j * gsj + o, mask=m, other=0.0)
                zhat = tl.load(ZB + i, mask=m, other=0.0) + dt * yhat
                u = dt * zhat
                tl.store(sp + o, u * (1.0 - th * th), mask=m)
                yv = tl.load(yp + o, mask=m, other=0.0)
                zv = tl.load(zp + o, mask=m, other=0.0)
                tl.store(DOM + i, tl.load(DOM + i, mask=m, other=0.0) + -u * yv, mask=m)
                tl.store(DAL + i, tl.load(DAL + i, mask=m, other=0.0) + -u * zv, mask=m)
                tl.store(ZB + i, zhat + -u * tl.load(AL + i, mask=m, other=0.0), mask=m)
                tl.store(YB + i, yhat + -u * tl.load(OM + i, mask=m, other=0.0), mask=m)
            tl.debug_barrier()  # (persistent) all of s_t is written before Wᵀ ⊛ s_t reads it
        if PHASE != 1:
            for t in range(tiles):
                pix, pm = _tri_pixels(tiles, t, HW, BP)
                i = b * CHW + rows[:, None] * HW + pix[None, :]
                m = cm[:, None] & pm[None, :]
                acc = _tri_conv(sp, Wr, rows, cm, pix, pm, C, H, W, True, CP, BP)
                tl.store(YB + i, tl.load(YB + i, mask=m, other=0.0) + acc, mask=m)
            tl.debug_barrier()  # (persistent) ȳ is final before the previous step reads it
