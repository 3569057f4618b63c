;; SIMD kernels that run in the tfjs wasm backend's own memory (imported), on
;; channels-last float32 tensors whose channel count is a multiple of 4.
;; Pointers are byte offsets. `deno task build-wasm` compiles this file into
;; lib/simd_kernels_wasm.ts; lib/simd_kernels.ts loads it.
;;
;; Sums over many rows are taken in float32 over blocks of 16 rows, then added
;; into float64 totals, so their error does not grow with the batch.
(module
  (import "env" "memory" (memory 1))

  ;; Zeroes `bytes` (a multiple of 16) at `ptr`.
  (func $zero (param $ptr i32) (param $bytes i32)
    (local $i i32)
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $bytes)))
        (v128.store (i32.add (local.get $ptr) (local.get $i)) (v128.const i64x2 0 0))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $l))))

  ;; acc (f64) += part (f32), `n` floats (a multiple of 4).
  (func $flush (param $part i32) (param $acc i32) (param $n i32)
    (local $i i32) (local $v v128) (local $a i32)
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $v (v128.load (i32.add (local.get $part) (i32.shl (local.get $i) (i32.const 2)))))
        (local.set $a (i32.add (local.get $acc) (i32.shl (local.get $i) (i32.const 3))))
        (v128.store (local.get $a)
          (f64x2.add (v128.load (local.get $a)) (f64x2.promote_low_f32x4 (local.get $v))))
        (v128.store offset=16 (local.get $a)
          (f64x2.add (v128.load offset=16 (local.get $a))
            (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
              (local.get $v) (local.get $v)))))
        (local.set $i (i32.add (local.get $i) (i32.const 4)))
        (br $l))))

  ;; Batch-norm statistics over `p` rows of `c` channels at `x`: for each group of
  ;; four channels g, adds the sums of (x - shift) to acc[8g, 8g + 4) and of its
  ;; square to acc[8g + 4, 8g + 8) (f64). Blocks of 16 rows are summed down the rows
  ;; a cache line (16 channels) at a time, in registers; the block stays in L1.
  (func (export "moments") (param $x i32) (param $p i32) (param $c i32) (param $shift i32) (param $acc i32)
    (local $r0 i32) (local $n i32) (local $j i32) (local $cb i32) (local $ptr i32) (local $end i32) (local $shp i32)
    (local $v v128) (local $s0 v128) (local $q0 v128) (local $s1 v128) (local $q1 v128) (local $s2 v128) (local $q2 v128) (local $s3 v128) (local $q3 v128)
    (local.set $cb (i32.shl (local.get $c) (i32.const 2)))
    (block $done
      (loop $blocks
        (br_if $done (i32.ge_u (local.get $r0) (local.get $p)))
        (local.set $n (i32.sub (local.get $p) (local.get $r0)))
        (if (i32.gt_u (local.get $n) (i32.const 16)) (then (local.set $n (i32.const 16))))
        (local.set $j (i32.const 0))
        (loop $groups
          (if (i32.le_u (i32.add (local.get $j) (i32.const 64)) (local.get $cb))
            (then
          (local.set $s0 (v128.const i64x2 0 0))
          (local.set $q0 (v128.const i64x2 0 0))
          (local.set $s1 (v128.const i64x2 0 0))
          (local.set $q1 (v128.const i64x2 0 0))
          (local.set $s2 (v128.const i64x2 0 0))
          (local.set $q2 (v128.const i64x2 0 0))
          (local.set $s3 (v128.const i64x2 0 0))
          (local.set $q3 (v128.const i64x2 0 0))
          (local.set $shp (i32.add (local.get $shift) (local.get $j)))
          (local.set $ptr (i32.add (i32.add (local.get $x) (i32.mul (local.get $r0) (local.get $cb))) (local.get $j)))
          (local.set $end (i32.add (local.get $ptr) (i32.mul (local.get $n) (local.get $cb))))
          (loop $rows4
            (local.set $v (f32x4.sub (v128.load (local.get $ptr)) (v128.load (local.get $shp))))
            (local.set $s0 (f32x4.add (local.get $s0) (local.get $v)))
            (local.set $q0 (f32x4.add (local.get $q0) (f32x4.mul (local.get $v) (local.get $v))))
            (local.set $v (f32x4.sub (v128.load offset=16 (local.get $ptr)) (v128.load offset=16 (local.get $shp))))
            (local.set $s1 (f32x4.add (local.get $s1) (local.get $v)))
            (local.set $q1 (f32x4.add (local.get $q1) (f32x4.mul (local.get $v) (local.get $v))))
            (local.set $v (f32x4.sub (v128.load offset=32 (local.get $ptr)) (v128.load offset=32 (local.get $shp))))
            (local.set $s2 (f32x4.add (local.get $s2) (local.get $v)))
            (local.set $q2 (f32x4.add (local.get $q2) (f32x4.mul (local.get $v) (local.get $v))))
            (local.set $v (f32x4.sub (v128.load offset=48 (local.get $ptr)) (v128.load offset=48 (local.get $shp))))
            (local.set $s3 (f32x4.add (local.get $s3) (local.get $v)))
            (local.set $q3 (f32x4.add (local.get $q3) (f32x4.mul (local.get $v) (local.get $v))))
            (local.set $ptr (i32.add (local.get $ptr) (local.get $cb)))
            (br_if $rows4 (i32.lt_u (local.get $ptr) (local.get $end))))
          (call $add_sums (i32.add (local.get $acc) (i32.shl (i32.add (local.get $j) (i32.const 0)) (i32.const 2))) (local.get $s0) (local.get $q0))
          (call $add_sums (i32.add (local.get $acc) (i32.shl (i32.add (local.get $j) (i32.const 16)) (i32.const 2))) (local.get $s1) (local.get $q1))
          (call $add_sums (i32.add (local.get $acc) (i32.shl (i32.add (local.get $j) (i32.const 32)) (i32.const 2))) (local.get $s2) (local.get $q2))
          (call $add_sums (i32.add (local.get $acc) (i32.shl (i32.add (local.get $j) (i32.const 48)) (i32.const 2))) (local.get $s3) (local.get $q3))
          (local.set $j (i32.add (local.get $j) (i32.const 64))))
            (else
          (local.set $s0 (v128.const i64x2 0 0))
          (local.set $q0 (v128.const i64x2 0 0))
          (local.set $shp (i32.add (local.get $shift) (local.get $j)))
          (local.set $ptr (i32.add (i32.add (local.get $x) (i32.mul (local.get $r0) (local.get $cb))) (local.get $j)))
          (local.set $end (i32.add (local.get $ptr) (i32.mul (local.get $n) (local.get $cb))))
          (loop $rows1
            (local.set $v (f32x4.sub (v128.load (local.get $ptr)) (v128.load (local.get $shp))))
            (local.set $s0 (f32x4.add (local.get $s0) (local.get $v)))
            (local.set $q0 (f32x4.add (local.get $q0) (f32x4.mul (local.get $v) (local.get $v))))
            (local.set $ptr (i32.add (local.get $ptr) (local.get $cb)))
            (br_if $rows1 (i32.lt_u (local.get $ptr) (local.get $end))))
          (call $add_sums (i32.add (local.get $acc) (i32.shl (i32.add (local.get $j) (i32.const 0)) (i32.const 2))) (local.get $s0) (local.get $q0))
          (local.set $j (i32.add (local.get $j) (i32.const 16)))))
          (br_if $groups (i32.lt_u (local.get $j) (local.get $cb))))
        (local.set $r0 (i32.add (local.get $r0) (local.get $n)))
        (br $blocks))))

  ;; acc[0, 4) += s and acc[4, 8) += q (f64 at `a`, s and q four f32 each).
  (func $add_sums (param $a i32) (param $s v128) (param $q v128)
    (v128.store (local.get $a) (f64x2.add (v128.load (local.get $a)) (f64x2.promote_low_f32x4 (local.get $s))))
    (v128.store offset=16 (local.get $a) (f64x2.add (v128.load offset=16 (local.get $a))
      (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $s) (local.get $s)))))
    (v128.store offset=32 (local.get $a) (f64x2.add (v128.load offset=32 (local.get $a)) (f64x2.promote_low_f32x4 (local.get $q))))
    (v128.store offset=48 (local.get $a) (f64x2.add (v128.load offset=48 (local.get $a))
      (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $q) (local.get $q))))))

  ;; y = min(max((x - mean) * scale + beta, lo), hi) over `n` floats, `c` channels
  ;; (NaN passes through).
  (func (export "bn_apply") (param $x i32) (param $y i32) (param $n i32) (param $c i32) (param $mean i32)
    (param $scale i32) (param $beta i32) (param $lo f32) (param $hi f32)
    (local $xp i32) (local $yp i32) (local $xend i32) (local $j i32) (local $cb i32) (local $vlo v128)
    (local $vhi v128)
    (local.set $cb (i32.shl (local.get $c) (i32.const 2)))
    (local.set $xp (local.get $x))
    (local.set $yp (local.get $y))
    (local.set $xend (i32.add (local.get $x) (i32.shl (local.get $n) (i32.const 2))))
    (local.set $vlo (f32x4.splat (local.get $lo)))
    (local.set $vhi (f32x4.splat (local.get $hi)))
    (block $done
      (loop $rows
        (br_if $done (i32.ge_u (local.get $xp) (local.get $xend)))
        (local.set $j (i32.const 0))
        (loop $ch
          ;; pmax/pmin are single instructions; their operand order keeps a NaN input.
          (v128.store (local.get $yp)
            (f32x4.pmin
              (f32x4.pmax
                (f32x4.add (v128.load (i32.add (local.get $beta) (local.get $j)))
                  (f32x4.mul (v128.load (i32.add (local.get $scale) (local.get $j)))
                    (f32x4.sub (v128.load (local.get $xp)) (v128.load (i32.add (local.get $mean) (local.get $j))))))
                (local.get $vlo))
              (local.get $vhi)))
          (local.set $xp (i32.add (local.get $xp) (i32.const 16)))
          (local.set $yp (i32.add (local.get $yp) (i32.const 16)))
          (local.set $j (i32.add (local.get $j) (i32.const 16)))
          (br_if $ch (i32.lt_u (local.get $j) (local.get $cb))))
        (br $rows))))

  ;; Batch-norm gradient sums: for each group of four channels g, adds sum(gr) to
  ;; acc[8g, 8g + 4) and sum(gr * (x - mean)) to acc[8g + 4, 8g + 8) (f64), gr the
  ;; output gradient where the fused activation passed it (with `masked`: where
  ;; the pre-activation (x - mean) * scale + beta, recomputed as bn_apply does,
  ;; lies in (0, hi); else dy itself). Summed as in `moments`.
  (func (export "bn_grad_sums") (param $dy i32) (param $x i32) (param $p i32) (param $c i32)
    (param $mean i32) (param $scale i32) (param $beta i32) (param $hi f32) (param $masked i32) (param $acc i32)
    (local $r0 i32) (local $n i32) (local $j i32) (local $cb i32) (local $ptr i32) (local $end i32) (local $shp i32)
    (local $sp i32) (local $bp i32) (local $xc v128)
    (local $v v128) (local $vhi v128) (local $all v128) (local $s0 v128) (local $q0 v128) (local $s1 v128) (local $q1 v128) (local $s2 v128) (local $q2 v128) (local $s3 v128) (local $q3 v128)
    (local.set $cb (i32.shl (local.get $c) (i32.const 2)))
    (local.set $vhi (f32x4.splat (local.get $hi)))
    (local.set $all (i32x4.splat (i32.sub (i32.const 0) (i32.eqz (local.get $masked)))))
    (block $done
      (loop $blocks
        (br_if $done (i32.ge_u (local.get $r0) (local.get $p)))
        (local.set $n (i32.sub (local.get $p) (local.get $r0)))
        (if (i32.gt_u (local.get $n) (i32.const 16)) (then (local.set $n (i32.const 16))))
        (local.set $j (i32.const 0))
        (loop $groups
          (if (i32.le_u (i32.add (local.get $j) (i32.const 64)) (local.get $cb))
            (then
          (local.set $s0 (v128.const i64x2 0 0))
          (local.set $q0 (v128.const i64x2 0 0))
          (local.set $s1 (v128.const i64x2 0 0))
          (local.set $q1 (v128.const i64x2 0 0))
          (local.set $s2 (v128.const i64x2 0 0))
          (local.set $q2 (v128.const i64x2 0 0))
          (local.set $s3 (v128.const i64x2 0 0))
          (local.set $q3 (v128.const i64x2 0 0))
          (local.set $shp (i32.add (local.get $mean) (local.get $j)))
          (local.set $sp (i32.add (local.get $scale) (local.get $j)))
          (local.set $bp (i32.add (local.get $beta) (local.get $j)))
          (local.set $ptr (i32.add (i32.mul (local.get $r0) (local.get $cb)) (local.get $j)))
          (local.set $end (i32.add (local.get $ptr) (i32.mul (local.get $n) (local.get $cb))))
          (loop $rows4
            (local.set $xc (f32x4.sub (v128.load (i32.add (local.get $x) (local.get $ptr))) (v128.load (local.get $shp))))
            (local.set $v (f32x4.add (v128.load (local.get $bp)) (f32x4.mul (v128.load (local.get $sp)) (local.get $xc))))
            (local.set $v (v128.and (v128.load (i32.add (local.get $dy) (local.get $ptr)))
              (v128.or (local.get $all) (v128.and (f32x4.gt (local.get $v) (v128.const i64x2 0 0))
                (f32x4.lt (local.get $v) (local.get $vhi))))))
            (local.set $s0 (f32x4.add (local.get $s0) (local.get $v)))
            (local.set $q0 (f32x4.add (local.get $q0) (f32x4.mul (local.get $v) (local.get $xc))))
            (local.set $xc (f32x4.sub (v128.load offset=16 (i32.add (local.get $x) (local.get $ptr))) (v128.load offset=16 (local.get $shp))))
            (local.set $v (f32x4.add (v128.load offset=16 (local.get $bp)) (f32x4.mul (v128.load offset=16 (local.get $sp)) (local.get $xc))))
            (local.set $v (v128.and (v128.load offset=16 (i32.add (local.get $dy) (local.get $ptr)))
              (v128.or (local.get $all) (v128.and (f32x4.gt (local.get $v) (v128.const i64x2 0 0))
                (f32x4.lt (local.get $v) (local.get $vhi))))))
            (local.set $s1 (f32x4.add (local.get $s1) (local.get $v)))
            (local.set $q1 (f32x4.add (local.get $q1) (f32x4.mul (local.get $v) (local.get $xc))))
            (local.set $xc (f32x4.sub (v128.load offset=32 (i32.add (local.get $x) (local.get $ptr))) (v128.load offset=32 (local.get $shp))))
            (local.set $v (f32x4.add (v128.load offset=32 (local.get $bp)) (f32x4.mul (v128.load offset=32 (local.get $sp)) (local.get $xc))))
            (local.set $v (v128.and (v128.load offset=32 (i32.add (local.get $dy) (local.get $ptr)))
              (v128.or (local.get $all) (v128.and (f32x4.gt (local.get $v) (v128.const i64x2 0 0))
                (f32x4.lt (local.get $v) (local.get $vhi))))))
            (local.set $s2 (f32x4.add (local.get $s2) (local.get $v)))
            (local.set $q2 (f32x4.add (local.get $q2) (f32x4.mul (local.get $v) (local.get $xc))))
            (local.set $xc (f32x4.sub (v128.load offset=48 (i32.add (local.get $x) (local.get $ptr))) (v128.load offset=48 (local.get $shp))))
            (local.set $v (f32x4.add (v128.load offset=48 (local.get $bp)) (f32x4.mul (v128.load offset=48 (local.get $sp)) (local.get $xc))))
            (local.set $v (v128.and (v128.load offset=48 (i32.add (local.get $dy) (local.get $ptr)))
              (v128.or (local.get $all) (v128.and (f32x4.gt (local.get $v) (v128.const i64x2 0 0))
                (f32x4.lt (local.get $v) (local.get $vhi))))))
            (local.set $s3 (f32x4.add (local.get $s3) (local.get $v)))
            (local.set $q3 (f32x4.add (local.get $q3) (f32x4.mul (local.get $v) (local.get $xc))))
            (local.set $ptr (i32.add (local.get $ptr) (local.get $cb)))
            (br_if $rows4 (i32.lt_u (local.get $ptr) (local.get $end))))
          (call $add_sums (i32.add (local.get $acc) (i32.shl (i32.add (local.get $j) (i32.const 0)) (i32.const 2))) (local.get $s0) (local.get $q0))
          (call $add_sums (i32.add (local.get $acc) (i32.shl (i32.add (local.get $j) (i32.const 16)) (i32.const 2))) (local.get $s1) (local.get $q1))
          (call $add_sums (i32.add (local.get $acc) (i32.shl (i32.add (local.get $j) (i32.const 32)) (i32.const 2))) (local.get $s2) (local.get $q2))
          (call $add_sums (i32.add (local.get $acc) (i32.shl (i32.add (local.get $j) (i32.const 48)) (i32.const 2))) (local.get $s3) (local.get $q3))
          (local.set $j (i32.add (local.get $j) (i32.const 64))))
            (else
          (local.set $s0 (v128.const i64x2 0 0))
          (local.set $q0 (v128.const i64x2 0 0))
          (local.set $shp (i32.add (local.get $mean) (local.get $j)))
          (local.set $sp (i32.add (local.get $scale) (local.get $j)))
          (local.set $bp (i32.add (local.get $beta) (local.get $j)))
          (local.set $ptr (i32.add (i32.mul (local.get $r0) (local.get $cb)) (local.get $j)))
          (local.set $end (i32.add (local.get $ptr) (i32.mul (local.get $n) (local.get $cb))))
          (loop $rows1
            (local.set $xc (f32x4.sub (v128.load (i32.add (local.get $x) (local.get $ptr))) (v128.load (local.get $shp))))
            (local.set $v (f32x4.add (v128.load (local.get $bp)) (f32x4.mul (v128.load (local.get $sp)) (local.get $xc))))
            (local.set $v (v128.and (v128.load (i32.add (local.get $dy) (local.get $ptr)))
              (v128.or (local.get $all) (v128.and (f32x4.gt (local.get $v) (v128.const i64x2 0 0))
                (f32x4.lt (local.get $v) (local.get $vhi))))))
            (local.set $s0 (f32x4.add (local.get $s0) (local.get $v)))
            (local.set $q0 (f32x4.add (local.get $q0) (f32x4.mul (local.get $v) (local.get $xc))))
            (local.set $ptr (i32.add (local.get $ptr) (local.get $cb)))
            (br_if $rows1 (i32.lt_u (local.get $ptr) (local.get $end))))
          (call $add_sums (i32.add (local.get $acc) (i32.shl (i32.add (local.get $j) (i32.const 0)) (i32.const 2))) (local.get $s0) (local.get $q0))
          (local.set $j (i32.add (local.get $j) (i32.const 16)))))
          (br_if $groups (i32.lt_u (local.get $j) (local.get $cb))))
        (local.set $r0 (i32.add (local.get $r0) (local.get $n)))
        (br $blocks))))

  ;; dx = k * (g - a - (x - mean) * b) over `n` floats, `c` channels, g as in bn_grad_sums.
  (func (export "bn_grad_dx") (param $dy i32) (param $x i32) (param $dx i32) (param $n i32) (param $c i32)
    (param $mean i32) (param $scale i32) (param $beta i32) (param $k i32) (param $a i32) (param $b i32) (param $hi f32)
    (param $masked i32)
    (local $off i32) (local $end i32) (local $j i32) (local $cb i32) (local $g v128) (local $v v128)
    (local $xc v128) (local $vhi v128) (local $all v128)
    (local.set $cb (i32.shl (local.get $c) (i32.const 2)))
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (local.set $vhi (f32x4.splat (local.get $hi)))
    (local.set $all (i32x4.splat (i32.sub (i32.const 0) (i32.eqz (local.get $masked)))))
    (block $done
      (loop $rows
        (br_if $done (i32.ge_u (local.get $off) (local.get $end)))
        (local.set $j (i32.const 0))
        (loop $ch
          (local.set $xc (f32x4.sub (v128.load (i32.add (local.get $x) (local.get $off)))
            (v128.load (i32.add (local.get $mean) (local.get $j)))))
          (local.set $v (f32x4.add (v128.load (i32.add (local.get $beta) (local.get $j)))
            (f32x4.mul (v128.load (i32.add (local.get $scale) (local.get $j))) (local.get $xc))))
          (local.set $g (v128.and (v128.load (i32.add (local.get $dy) (local.get $off)))
            (v128.or (local.get $all) (v128.and (f32x4.gt (local.get $v) (v128.const i64x2 0 0))
              (f32x4.lt (local.get $v) (local.get $vhi))))))
          (v128.store (i32.add (local.get $dx) (local.get $off))
            (f32x4.mul (v128.load (i32.add (local.get $k) (local.get $j)))
              (f32x4.sub (f32x4.sub (local.get $g) (v128.load (i32.add (local.get $a) (local.get $j))))
                (f32x4.mul (v128.load (i32.add (local.get $b) (local.get $j))) (local.get $xc)))))
          (local.set $off (i32.add (local.get $off) (i32.const 16)))
          (local.set $j (i32.add (local.get $j) (i32.const 16)))
          (br_if $ch (i32.lt_u (local.get $j) (local.get $cb))))
        (br $rows))))

  ;; Depthwise conv filter gradient (multiplier 1): for each output row, part[ky, kx] (f32) gets
  ;; the sum over the row of x[b, iy, ix] * dy[b, oy, ox], then acc[ky, kx] (f64) gets part.
  ;; Each row sum runs in registers, 16 channels (a cache line) at a time, then 4 at a time,
  ;; over the output columns whose tap falls inside the input (no per-pixel bounds checks).
  ;; x [n, h, w, c], dy [n, oh, ow, c], part f32 and acc f64 [kh, kw, c].
  (func (export "dw_filter_grad") (param $x i32) (param $dy i32) (param $part i32) (param $acc i32)
    (param $n i32) (param $h i32) (param $w i32) (param $c i32) (param $oh i32) (param $ow i32)
    (param $kh i32) (param $kw i32) (param $sh i32) (param $sw i32) (param $dh i32) (param $dw i32)
    (param $top i32) (param $left i32)
    (local $cb i32) (local $b i32) (local $oy i32) (local $ky i32) (local $kx i32) (local $iy i32)
    (local $tapBytes i32) (local $xrow i32) (local $dyrow i32) (local $lo i32) (local $hi i32) (local $num i32)
    (local $xstep i32) (local $j i32) (local $j16 i32) (local $x0 i32) (local $xp i32) (local $dyp i32)
    (local $dyend i32) (local $pp i32) (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local.set $cb (i32.shl (local.get $c) (i32.const 2)))
    (local.set $tapBytes (i32.mul (i32.mul (local.get $kh) (local.get $kw)) (local.get $cb)))
    (local.set $xstep (i32.mul (local.get $sw) (local.get $cb)))
    (local.set $j16 (i32.and (local.get $cb) (i32.const -64)))
    (block $b_done
      (loop $b_loop
        (br_if $b_done (i32.ge_u (local.get $b) (local.get $n)))
        (local.set $oy (i32.const 0))
        (block $oy_done
          (loop $oy_loop
            (br_if $oy_done (i32.ge_u (local.get $oy) (local.get $oh)))
            (call $zero (local.get $part) (local.get $tapBytes))
            (local.set $dyrow (i32.add (local.get $dy) (i32.mul (local.get $cb)
              (i32.mul (i32.add (i32.mul (local.get $b) (local.get $oh)) (local.get $oy)) (local.get $ow)))))
            (local.set $ky (i32.const 0))
            (block $ky_done
              (loop $ky_loop
                (br_if $ky_done (i32.ge_u (local.get $ky) (local.get $kh)))
                (local.set $iy (i32.sub (i32.add (i32.mul (local.get $oy) (local.get $sh))
                  (i32.mul (local.get $ky) (local.get $dh))) (local.get $top)))
                (if (i32.lt_u (local.get $iy) (local.get $h))
                  (then
                    (local.set $xrow (i32.add (local.get $x) (i32.mul (local.get $cb)
                      (i32.mul (i32.add (i32.mul (local.get $b) (local.get $h)) (local.get $iy)) (local.get $w)))))
                    (local.set $kx (i32.const 0))
                    (block $kx_done
                      (loop $kx_loop
                        (br_if $kx_done (i32.ge_u (local.get $kx) (local.get $kw)))
                        ;; Output columns lo <= ox < hi read 0 <= ox * sw + kx * dw - left < w.
                        (local.set $num (i32.sub (local.get $left) (i32.mul (local.get $kx) (local.get $dw))))
                        (local.set $lo (select (i32.const 0)
                          (i32.div_s (i32.add (local.get $num) (i32.sub (local.get $sw) (i32.const 1))) (local.get $sw))
                          (i32.le_s (local.get $num) (i32.const 0))))
                        (local.set $num (i32.add (i32.sub (local.get $w) (i32.const 1)) (local.get $num)))
                        (local.set $hi (select (i32.const 0)
                          (i32.add (i32.div_s (local.get $num) (local.get $sw)) (i32.const 1))
                          (i32.lt_s (local.get $num) (i32.const 0))))
                        (if (i32.gt_s (local.get $hi) (local.get $ow)) (then (local.set $hi (local.get $ow))))
                        (if (i32.lt_s (local.get $lo) (local.get $hi))
                          (then
                            (local.set $pp (i32.add (local.get $part) (i32.mul (local.get $cb)
                              (i32.add (i32.mul (local.get $ky) (local.get $kw)) (local.get $kx)))))
                            (local.set $x0 (i32.add (local.get $xrow) (i32.mul (local.get $cb)
                              (i32.sub (i32.add (i32.mul (local.get $lo) (local.get $sw)) (i32.mul (local.get $kx) (local.get $dw)))
                                (local.get $left)))))
                            (local.set $j (i32.const 0))
                            (block $j16_done
                              (loop $j16_loop
                                (br_if $j16_done (i32.ge_u (local.get $j) (local.get $j16)))
                                (local.set $a0 (v128.const i64x2 0 0))
                                (local.set $a1 (v128.const i64x2 0 0))
                                (local.set $a2 (v128.const i64x2 0 0))
                                (local.set $a3 (v128.const i64x2 0 0))
                                (local.set $xp (i32.add (local.get $x0) (local.get $j)))
                                (local.set $dyp (i32.add (i32.add (local.get $dyrow) (i32.mul (local.get $lo) (local.get $cb)))
                                  (local.get $j)))
                                (local.set $dyend (i32.add (i32.add (local.get $dyrow) (i32.mul (local.get $hi) (local.get $cb)))
                                  (local.get $j)))
                                (loop $ox16
                                  (local.set $a0 (f32x4.add (local.get $a0)
                                    (f32x4.mul (v128.load (local.get $xp)) (v128.load (local.get $dyp)))))
                                  (local.set $a1 (f32x4.add (local.get $a1)
                                    (f32x4.mul (v128.load offset=16 (local.get $xp)) (v128.load offset=16 (local.get $dyp)))))
                                  (local.set $a2 (f32x4.add (local.get $a2)
                                    (f32x4.mul (v128.load offset=32 (local.get $xp)) (v128.load offset=32 (local.get $dyp)))))
                                  (local.set $a3 (f32x4.add (local.get $a3)
                                    (f32x4.mul (v128.load offset=48 (local.get $xp)) (v128.load offset=48 (local.get $dyp)))))
                                  (local.set $xp (i32.add (local.get $xp) (local.get $xstep)))
                                  (local.set $dyp (i32.add (local.get $dyp) (local.get $cb)))
                                  (br_if $ox16 (i32.lt_u (local.get $dyp) (local.get $dyend))))
                                (local.set $xp (i32.add (local.get $pp) (local.get $j)))
                                (v128.store (local.get $xp) (f32x4.add (v128.load (local.get $xp)) (local.get $a0)))
                                (v128.store offset=16 (local.get $xp) (f32x4.add (v128.load offset=16 (local.get $xp)) (local.get $a1)))
                                (v128.store offset=32 (local.get $xp) (f32x4.add (v128.load offset=32 (local.get $xp)) (local.get $a2)))
                                (v128.store offset=48 (local.get $xp) (f32x4.add (v128.load offset=48 (local.get $xp)) (local.get $a3)))
                                (local.set $j (i32.add (local.get $j) (i32.const 64)))
                                (br $j16_loop)))
                            (block $j4_done
                              (loop $j4_loop
                                (br_if $j4_done (i32.ge_u (local.get $j) (local.get $cb)))
                                (local.set $a0 (v128.const i64x2 0 0))
                                (local.set $xp (i32.add (local.get $x0) (local.get $j)))
                                (local.set $dyp (i32.add (i32.add (local.get $dyrow) (i32.mul (local.get $lo) (local.get $cb)))
                                  (local.get $j)))
                                (local.set $dyend (i32.add (i32.add (local.get $dyrow) (i32.mul (local.get $hi) (local.get $cb)))
                                  (local.get $j)))
                                (loop $ox4
                                  (local.set $a0 (f32x4.add (local.get $a0)
                                    (f32x4.mul (v128.load (local.get $xp)) (v128.load (local.get $dyp)))))
                                  (local.set $xp (i32.add (local.get $xp) (local.get $xstep)))
                                  (local.set $dyp (i32.add (local.get $dyp) (local.get $cb)))
                                  (br_if $ox4 (i32.lt_u (local.get $dyp) (local.get $dyend))))
                                (local.set $xp (i32.add (local.get $pp) (local.get $j)))
                                (v128.store (local.get $xp) (f32x4.add (v128.load (local.get $xp)) (local.get $a0)))
                                (local.set $j (i32.add (local.get $j) (i32.const 16)))
                                (br $j4_loop)))))
                        (local.set $kx (i32.add (local.get $kx) (i32.const 1)))
                        (br $kx_loop)))))
                (local.set $ky (i32.add (local.get $ky) (i32.const 1)))
                (br $ky_loop)))
            (call $flush (local.get $part) (local.get $acc) (i32.shr_u (local.get $tapBytes) (i32.const 2)))
            (local.set $oy (i32.add (local.get $oy) (i32.const 1)))
            (br $oy_loop)))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (br $b_loop))))

  ;; Depthwise gather (multiplier 1): the forward conv and the input gradient
  ;; are both, per output pixel, a sum over taps of a source pixel times the tap's
  ;; weights: dst[b, y, x] = sum over (ky, kx) of src[b, rowTab[y * kh + ky],
  ;; colTab[x * kw + kx]] * w[ky, kx], where a table entry of -1 skips the tap
  ;; (stride, dilation, padding and, for the gradient, the flip are in the tables).
  ;; The taps add in row-major order from zero in registers, 16 channels at a
  ;; time (then 4), for two neighbouring pixels that share each load of the
  ;; weights, so dst is written once. src [n, sh, sw, c], w [kh, kw, c],
  ;; dst [n, h, w, c]; c a multiple of 4.
  (func (export "dw_gather") (param $src i32) (param $w i32) (param $dst i32) (param $rowTab i32)
    (param $colTab i32) (param $n i32) (param $h i32) (param $wd i32) (param $c i32) (param $sh i32) (param $sw i32)
    (param $kh i32) (param $kw i32)
    (local $cb i32) (local $b i32) (local $y i32) (local $x i32) (local $ky i32) (local $kx i32) (local $sy i32)
    (local $sx0 i32) (local $sx1 i32) (local $dp i32) (local $dq i32) (local $rp i32) (local $wr i32) (local $sp i32)
    (local $wp i32) (local $j i32) (local $rt i32) (local $ct0 i32) (local $ct1 i32) (local $img i32) (local $end16 i32)
    (local $two i32) (local $blk i32)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $b0 v128) (local $b1 v128) (local $b2 v128) (local $b3 v128)
    (local $w0 v128) (local $w1 v128) (local $w2 v128) (local $w3 v128)
    (local.set $cb (i32.shl (local.get $c) (i32.const 2)))
    (local.set $end16 (i32.and (local.get $cb) (i32.const -64)))
    (local.set $dp (local.get $dst))
    (block $b_done
      (loop $b_loop
        (br_if $b_done (i32.ge_u (local.get $b) (local.get $n)))
        (local.set $img (i32.add (local.get $src)
          (i32.mul (local.get $b) (i32.mul (local.get $cb) (i32.mul (local.get $sh) (local.get $sw))))))
        (local.set $y (i32.const 0))
        (block $y_done
          (loop $y_loop
            (br_if $y_done (i32.ge_u (local.get $y) (local.get $h)))
            (local.set $rt (i32.add (local.get $rowTab) (i32.shl (i32.mul (local.get $y) (local.get $kh)) (i32.const 2))))
            (local.set $x (i32.const 0))
            (block $x_done
              (loop $x_loop
                (br_if $x_done (i32.ge_u (local.get $x) (local.get $wd)))
                ;; Two neighbouring pixels share each load of the weights; a last odd one is its own pair.
                (local.set $two (i32.lt_u (i32.add (local.get $x) (i32.const 1)) (local.get $wd)))
                (local.set $ct0 (i32.add (local.get $colTab) (i32.shl (i32.mul (local.get $x) (local.get $kw)) (i32.const 2))))
                (local.set $ct1 (select (i32.add (local.get $ct0) (i32.shl (local.get $kw) (i32.const 2))) (local.get $ct0)
                  (local.get $two)))
                (local.set $dq (i32.add (local.get $dp) (local.get $cb)))
                (local.set $j (i32.const 0))
                ;; 16 channels (four vectors) at a time, then one vector at a time.
                (block $j_done
                  (loop $j_loop
                    (br_if $j_done (i32.ge_u (local.get $j) (local.get $cb)))
                    (local.set $blk (i32.lt_u (local.get $j) (local.get $end16)))
                    (local.set $a0 (v128.const i64x2 0 0))
                    (local.set $a1 (v128.const i64x2 0 0))
                    (local.set $a2 (v128.const i64x2 0 0))
                    (local.set $a3 (v128.const i64x2 0 0))
                    (local.set $b0 (v128.const i64x2 0 0))
                    (local.set $b1 (v128.const i64x2 0 0))
                    (local.set $b2 (v128.const i64x2 0 0))
                    (local.set $b3 (v128.const i64x2 0 0))
                    (local.set $ky (i32.const 0))
                    (block $ky_done
                      (loop $ky_loop
                        (br_if $ky_done (i32.ge_u (local.get $ky) (local.get $kh)))
                        (local.set $sy (i32.load (i32.add (local.get $rt) (i32.shl (local.get $ky) (i32.const 2)))))
                        (if (i32.ge_s (local.get $sy) (i32.const 0))
                          (then
                            (local.set $rp (i32.add (i32.add (local.get $img) (local.get $j))
                              (i32.mul (local.get $cb) (i32.mul (local.get $sy) (local.get $sw)))))
                            (local.set $wr (i32.add (i32.add (local.get $w) (local.get $j))
                              (i32.mul (local.get $cb) (i32.mul (local.get $ky) (local.get $kw)))))
                            (local.set $kx (i32.const 0))
                            (block $kx_done
                              (loop $kx_loop
                                (br_if $kx_done (i32.ge_u (local.get $kx) (local.get $kw)))
                                (local.set $sx0 (i32.load (i32.add (local.get $ct0) (i32.shl (local.get $kx) (i32.const 2)))))
                                (local.set $sx1 (i32.load (i32.add (local.get $ct1) (i32.shl (local.get $kx) (i32.const 2)))))
                                (local.set $wp (i32.add (local.get $wr) (i32.mul (local.get $cb) (local.get $kx))))
                                (if (local.get $blk)
                                  (then
                                    (local.set $w0 (v128.load (local.get $wp)))
                                    (local.set $w1 (v128.load offset=16 (local.get $wp)))
                                    (local.set $w2 (v128.load offset=32 (local.get $wp)))
                                    (local.set $w3 (v128.load offset=48 (local.get $wp)))
                                    (if (i32.ge_s (local.get $sx0) (i32.const 0))
                                      (then
                                        (local.set $sp (i32.add (local.get $rp) (i32.mul (local.get $cb) (local.get $sx0))))
                                        (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (v128.load (local.get $sp)) (local.get $w0))))
                                        (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (v128.load offset=16 (local.get $sp)) (local.get $w1))))
                                        (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul (v128.load offset=32 (local.get $sp)) (local.get $w2))))
                                        (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul (v128.load offset=48 (local.get $sp)) (local.get $w3))))))
                                    (if (i32.ge_s (local.get $sx1) (i32.const 0))
                                      (then
                                        (local.set $sp (i32.add (local.get $rp) (i32.mul (local.get $cb) (local.get $sx1))))
                                        (local.set $b0 (f32x4.add (local.get $b0) (f32x4.mul (v128.load (local.get $sp)) (local.get $w0))))
                                        (local.set $b1 (f32x4.add (local.get $b1) (f32x4.mul (v128.load offset=16 (local.get $sp)) (local.get $w1))))
                                        (local.set $b2 (f32x4.add (local.get $b2) (f32x4.mul (v128.load offset=32 (local.get $sp)) (local.get $w2))))
                                        (local.set $b3 (f32x4.add (local.get $b3) (f32x4.mul (v128.load offset=48 (local.get $sp)) (local.get $w3)))))))
                                  (else
                                    (local.set $w0 (v128.load (local.get $wp)))
                                    (if (i32.ge_s (local.get $sx0) (i32.const 0))
                                      (then
                                        (local.set $sp (i32.add (local.get $rp) (i32.mul (local.get $cb) (local.get $sx0))))
                                        (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (v128.load (local.get $sp)) (local.get $w0))))))
                                    (if (i32.ge_s (local.get $sx1) (i32.const 0))
                                      (then
                                        (local.set $sp (i32.add (local.get $rp) (i32.mul (local.get $cb) (local.get $sx1))))
                                        (local.set $b0 (f32x4.add (local.get $b0) (f32x4.mul (v128.load (local.get $sp)) (local.get $w0))))))))
                                (local.set $kx (i32.add (local.get $kx) (i32.const 1)))
                                (br $kx_loop)))))
                        (local.set $ky (i32.add (local.get $ky) (i32.const 1)))
                        (br $ky_loop)))
                    (v128.store (i32.add (local.get $dp) (local.get $j)) (local.get $a0))
                    (if (local.get $two) (then (v128.store (i32.add (local.get $dq) (local.get $j)) (local.get $b0))))
                    (if (local.get $blk)
                      (then
                        (v128.store offset=16 (i32.add (local.get $dp) (local.get $j)) (local.get $a1))
                        (v128.store offset=32 (i32.add (local.get $dp) (local.get $j)) (local.get $a2))
                        (v128.store offset=48 (i32.add (local.get $dp) (local.get $j)) (local.get $a3))
                        (if (local.get $two)
                          (then
                            (v128.store offset=16 (i32.add (local.get $dq) (local.get $j)) (local.get $b1))
                            (v128.store offset=32 (i32.add (local.get $dq) (local.get $j)) (local.get $b2))
                            (v128.store offset=48 (i32.add (local.get $dq) (local.get $j)) (local.get $b3))))
                        (local.set $j (i32.add (local.get $j) (i32.const 64))))
                      (else (local.set $j (i32.add (local.get $j) (i32.const 16)))))
                    (br $j_loop)))
                (local.set $dp (select (i32.add (local.get $dq) (local.get $cb)) (local.get $dq) (local.get $two)))
                (local.set $x (i32.add (local.get $x) (i32.const 2)))
                (br $x_loop)))
            (local.set $y (i32.add (local.get $y) (i32.const 1)))
            (br $y_loop)))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (br $b_loop))))

  ;; 1x1 convolution over NHWC rows: y[r, o] = sum over k of x[r, k] * w[k, o],
  ;; from zero in k order. Two rows at a time share each load of w, 16 outputs
  ;; (eight accumulators) then 4 at a time; an odd last row is computed as its
  ;; own pair and stored once. x [rows, k], w [k, co], y [rows, co]; co a
  ;; multiple of 4.
  (func (export "pointwise") (param $x i32) (param $w i32) (param $y i32) (param $rows i32) (param $k i32)
    (param $co i32)
    (local $r i32) (local $x0 i32) (local $x1 i32) (local $y0 i32) (local $y1 i32) (local $j i32) (local $i i32)
    (local $wp i32) (local $ob i32) (local $kb i32) (local $end16 i32) (local $two i32)
    (local $s0 v128) (local $s1 v128) (local $w0 v128) (local $w1 v128) (local $w2 v128) (local $w3 v128)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $b0 v128) (local $b1 v128) (local $b2 v128) (local $b3 v128)
    (local.set $ob (i32.shl (local.get $co) (i32.const 2)))
    (local.set $kb (i32.shl (local.get $k) (i32.const 2)))
    (local.set $end16 (i32.and (local.get $ob) (i32.const -64)))
    (block $r_done
      (loop $r_loop
        (br_if $r_done (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $two (i32.lt_u (i32.add (local.get $r) (i32.const 1)) (local.get $rows)))
        (local.set $x0 (i32.add (local.get $x) (i32.mul (local.get $r) (local.get $kb))))
        (local.set $x1 (select (i32.add (local.get $x0) (local.get $kb)) (local.get $x0) (local.get $two)))
        (local.set $y0 (i32.add (local.get $y) (i32.mul (local.get $r) (local.get $ob))))
        (local.set $y1 (i32.add (local.get $y0) (local.get $ob)))
        (local.set $j (i32.const 0))
        (block $j16_done
          (loop $j16_loop
            (br_if $j16_done (i32.ge_u (local.get $j) (local.get $end16)))
            (local.set $a0 (v128.const i64x2 0 0))
            (local.set $a1 (v128.const i64x2 0 0))
            (local.set $a2 (v128.const i64x2 0 0))
            (local.set $a3 (v128.const i64x2 0 0))
            (local.set $b0 (v128.const i64x2 0 0))
            (local.set $b1 (v128.const i64x2 0 0))
            (local.set $b2 (v128.const i64x2 0 0))
            (local.set $b3 (v128.const i64x2 0 0))
            (local.set $wp (i32.add (local.get $w) (local.get $j)))
            (local.set $i (i32.const 0))
            (block $k_done
              (loop $k_loop
                (br_if $k_done (i32.ge_u (local.get $i) (local.get $kb)))
                (local.set $s0 (v128.load32_splat (i32.add (local.get $x0) (local.get $i))))
                (local.set $s1 (v128.load32_splat (i32.add (local.get $x1) (local.get $i))))
                (local.set $w0 (v128.load (local.get $wp)))
                (local.set $w1 (v128.load offset=16 (local.get $wp)))
                (local.set $w2 (v128.load offset=32 (local.get $wp)))
                (local.set $w3 (v128.load offset=48 (local.get $wp)))
                (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (local.get $s0) (local.get $w0))))
                (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (local.get $s0) (local.get $w1))))
                (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul (local.get $s0) (local.get $w2))))
                (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul (local.get $s0) (local.get $w3))))
                (local.set $b0 (f32x4.add (local.get $b0) (f32x4.mul (local.get $s1) (local.get $w0))))
                (local.set $b1 (f32x4.add (local.get $b1) (f32x4.mul (local.get $s1) (local.get $w1))))
                (local.set $b2 (f32x4.add (local.get $b2) (f32x4.mul (local.get $s1) (local.get $w2))))
                (local.set $b3 (f32x4.add (local.get $b3) (f32x4.mul (local.get $s1) (local.get $w3))))
                (local.set $wp (i32.add (local.get $wp) (local.get $ob)))
                (local.set $i (i32.add (local.get $i) (i32.const 4)))
                (br $k_loop)))
            (v128.store (i32.add (local.get $y0) (local.get $j)) (local.get $a0))
            (v128.store offset=16 (i32.add (local.get $y0) (local.get $j)) (local.get $a1))
            (v128.store offset=32 (i32.add (local.get $y0) (local.get $j)) (local.get $a2))
            (v128.store offset=48 (i32.add (local.get $y0) (local.get $j)) (local.get $a3))
            (if (local.get $two)
              (then
                (v128.store (i32.add (local.get $y1) (local.get $j)) (local.get $b0))
                (v128.store offset=16 (i32.add (local.get $y1) (local.get $j)) (local.get $b1))
                (v128.store offset=32 (i32.add (local.get $y1) (local.get $j)) (local.get $b2))
                (v128.store offset=48 (i32.add (local.get $y1) (local.get $j)) (local.get $b3))))
            (local.set $j (i32.add (local.get $j) (i32.const 64)))
            (br $j16_loop)))
        (block $j4_done
          (loop $j4_loop
            (br_if $j4_done (i32.ge_u (local.get $j) (local.get $ob)))
            (local.set $a0 (v128.const i64x2 0 0))
            (local.set $b0 (v128.const i64x2 0 0))
            (local.set $wp (i32.add (local.get $w) (local.get $j)))
            (local.set $i (i32.const 0))
            (block $k4_done
              (loop $k4_loop
                (br_if $k4_done (i32.ge_u (local.get $i) (local.get $kb)))
                (local.set $w0 (v128.load (local.get $wp)))
                (local.set $a0 (f32x4.add (local.get $a0)
                  (f32x4.mul (v128.load32_splat (i32.add (local.get $x0) (local.get $i))) (local.get $w0))))
                (local.set $b0 (f32x4.add (local.get $b0)
                  (f32x4.mul (v128.load32_splat (i32.add (local.get $x1) (local.get $i))) (local.get $w0))))
                (local.set $wp (i32.add (local.get $wp) (local.get $ob)))
                (local.set $i (i32.add (local.get $i) (i32.const 4)))
                (br $k4_loop)))
            (v128.store (i32.add (local.get $y0) (local.get $j)) (local.get $a0))
            (if (local.get $two) (then (v128.store (i32.add (local.get $y1) (local.get $j)) (local.get $b0))))
            (local.set $j (i32.add (local.get $j) (i32.const 16)))
            (br $j4_loop)))
        (local.set $r (i32.add (local.get $r) (i32.const 2)))
        (br $r_loop))))

  ;; Max-pool gradient (dilation 1): for each output pixel and group of four
  ;; channels, the first maximum of the window in row-major order (strictly
  ;; greater, as tfjs's cpu backend; NaN never wins) takes dy, added into dx, which
  ;; the caller zeroes. With `tiled` (the windows tile the input exactly) dx is
  ;; stored instead, and need not be zeroed. x, dx [n, h, w, c], dy [n, oh, ow, c].
  (func (export "max_pool_grad") (param $x i32) (param $dy i32) (param $dx i32) (param $n i32) (param $h i32)
    (param $wd i32) (param $c i32) (param $oh i32) (param $ow i32) (param $kh i32) (param $kw i32) (param $sh i32)
    (param $sw i32) (param $top i32) (param $left i32) (param $tiled i32)
    (local $cb i32) (local $b i32) (local $oy i32) (local $ox i32) (local $iy i32) (local $ix i32) (local $ky i32)
    (local $kx i32) (local $j i32) (local $k i32) (local $at i32) (local $dyp i32) (local $base i32)
    (local $best v128) (local $pos v128) (local $v v128) (local $m v128) (local $g v128)
    (local.set $cb (i32.shl (local.get $c) (i32.const 2)))
    (local.set $dyp (local.get $dy))
    (block $b_done
      (loop $b_loop
        (br_if $b_done (i32.ge_u (local.get $b) (local.get $n)))
        (local.set $oy (i32.const 0))
        (block $oy_done
          (loop $oy_loop
            (br_if $oy_done (i32.ge_u (local.get $oy) (local.get $oh)))
            (local.set $ox (i32.const 0))
            (block $ox_done
              (loop $ox_loop
                (br_if $ox_done (i32.ge_u (local.get $ox) (local.get $ow)))
                (local.set $j (i32.const 0))
                (loop $j_loop
                  (local.set $best (f32x4.splat (f32.const -inf)))
                  (local.set $pos (i32x4.splat (i32.const -1)))
                  ;; Pass 1: the window's first maximum, as a tap index per lane.
                  (local.set $k (i32.const 0))
                  (local.set $ky (i32.const 0))
                  (loop $ky1
                    (local.set $iy (i32.sub (i32.add (i32.mul (local.get $oy) (local.get $sh)) (local.get $ky))
                      (local.get $top)))
                    (local.set $kx (i32.const 0))
                    (loop $kx1
                      (local.set $ix (i32.sub (i32.add (i32.mul (local.get $ox) (local.get $sw)) (local.get $kx))
                        (local.get $left)))
                      (if (i32.and (i32.lt_u (local.get $iy) (local.get $h)) (i32.lt_u (local.get $ix) (local.get $wd)))
                        (then
                          (local.set $v (v128.load (i32.add (local.get $x) (i32.add (local.get $j)
                            (i32.mul (local.get $cb) (i32.add (i32.mul (i32.add (i32.mul (local.get $b) (local.get $h))
                              (local.get $iy)) (local.get $wd)) (local.get $ix)))))))
                          (local.set $m (f32x4.gt (local.get $v) (local.get $best)))
                          (local.set $best (v128.bitselect (local.get $v) (local.get $best) (local.get $m)))
                          (local.set $pos (v128.bitselect (i32x4.splat (local.get $k)) (local.get $pos) (local.get $m)))))
                      (local.set $k (i32.add (local.get $k) (i32.const 1)))
                      (local.set $kx (i32.add (local.get $kx) (i32.const 1)))
                      (br_if $kx1 (i32.lt_u (local.get $kx) (local.get $kw))))
                    (local.set $ky (i32.add (local.get $ky) (i32.const 1)))
                    (br_if $ky1 (i32.lt_u (local.get $ky) (local.get $kh))))
                  ;; Pass 2: dy to that tap.
                  (local.set $g (v128.load (i32.add (local.get $dyp) (local.get $j))))
                  (local.set $k (i32.const 0))
                  (local.set $ky (i32.const 0))
                  (loop $ky2
                    (local.set $iy (i32.sub (i32.add (i32.mul (local.get $oy) (local.get $sh)) (local.get $ky))
                      (local.get $top)))
                    (local.set $kx (i32.const 0))
                    (loop $kx2
                      (local.set $ix (i32.sub (i32.add (i32.mul (local.get $ox) (local.get $sw)) (local.get $kx))
                        (local.get $left)))
                      (if (i32.and (i32.lt_u (local.get $iy) (local.get $h)) (i32.lt_u (local.get $ix) (local.get $wd)))
                        (then
                          (local.set $at (i32.add (local.get $dx) (i32.add (local.get $j)
                            (i32.mul (local.get $cb) (i32.add (i32.mul (i32.add (i32.mul (local.get $b) (local.get $h))
                              (local.get $iy)) (local.get $wd)) (local.get $ix))))))
                          (local.set $v (v128.and (local.get $g) (i32x4.eq (local.get $pos) (i32x4.splat (local.get $k)))))
                          (if (i32.eqz (local.get $tiled))
                            (then (local.set $v (f32x4.add (v128.load (local.get $at)) (local.get $v)))))
                          (v128.store (local.get $at) (local.get $v))))
                      (local.set $k (i32.add (local.get $k) (i32.const 1)))
                      (local.set $kx (i32.add (local.get $kx) (i32.const 1)))
                      (br_if $kx2 (i32.lt_u (local.get $kx) (local.get $kw))))
                    (local.set $ky (i32.add (local.get $ky) (i32.const 1)))
                    (br_if $ky2 (i32.lt_u (local.get $ky) (local.get $kh))))
                  (local.set $j (i32.add (local.get $j) (i32.const 16)))
                  (br_if $j_loop (i32.lt_u (local.get $j) (local.get $cb))))
                (local.set $dyp (i32.add (local.get $dyp) (local.get $cb)))
                (local.set $ox (i32.add (local.get $ox) (i32.const 1)))
                (br $ox_loop)))
            (local.set $oy (i32.add (local.get $oy) (i32.const 1)))
            (br $oy_loop)))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (br $b_loop))))

  ;; ReLU / ReLU6 gradient: dx = dy where 0 < x < hi (0 < x with hi = +inf), else
  ;; 0; a NaN x gives NaN. `n` floats (a multiple of 4).
  (func (export "relu_grad") (param $dy i32) (param $x i32) (param $dx i32) (param $n i32) (param $hi f32)
    (local $i i32) (local $end i32) (local $v v128) (local $vhi v128) (local $pass v128) (local $open v128)
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (local.set $vhi (f32x4.splat (local.get $hi)))
    (local.set $open (f32x4.eq (local.get $vhi) (f32x4.splat (f32.const inf))))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $v (v128.load (i32.add (local.get $x) (local.get $i))))
        (local.set $pass (v128.and (f32x4.gt (local.get $v) (v128.const f32x4 0 0 0 0))
          (v128.or (f32x4.lt (local.get $v) (local.get $vhi)) (local.get $open))))
        (v128.store (i32.add (local.get $dx) (local.get $i))
          (v128.bitselect (local.get $v)
            (v128.and (v128.load (i32.add (local.get $dy) (local.get $i))) (local.get $pass))
            (f32x4.ne (local.get $v) (local.get $v))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $l))))

  ;; Momentum (the tutorial's nn.Momentum with weight decay and loss scale), `n`
  ;; floats (a multiple of 4) of parameter w, velocity v and gradient g into wo, vo:
  ;;   s = g * sens (flag 1); s += w * wd (flag 2); s *= scale (flag 4);
  ;;   vo = v * m + s; wo = w - vo * lr
  ;; in that order, as the same float32 ops on tensors round.
  (func (export "momentum") (param $w i32) (param $v i32) (param $g i32) (param $wo i32) (param $vo i32)
    (param $n i32) (param $m f32) (param $wd f32) (param $scale f32) (param $lr f32) (param $sens f32)
    (param $flags i32)
    (local $i i32) (local $end i32) (local $s v128) (local $x v128) (local $nv v128)
    (local $vm v128) (local $vwd v128) (local $vscale v128) (local $vlr v128) (local $vsens v128)
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (local.set $vm (f32x4.splat (local.get $m)))
    (local.set $vwd (f32x4.splat (local.get $wd)))
    (local.set $vscale (f32x4.splat (local.get $scale)))
    (local.set $vlr (f32x4.splat (local.get $lr)))
    (local.set $vsens (f32x4.splat (local.get $sens)))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $x (v128.load (i32.add (local.get $w) (local.get $i))))
        (local.set $s (v128.load (i32.add (local.get $g) (local.get $i))))
        (if (i32.and (local.get $flags) (i32.const 1))
          (then (local.set $s (f32x4.mul (local.get $s) (local.get $vsens)))))
        (if (i32.and (local.get $flags) (i32.const 2))
          (then (local.set $s (f32x4.add (local.get $s) (f32x4.mul (local.get $x) (local.get $vwd))))))
        (if (i32.and (local.get $flags) (i32.const 4))
          (then (local.set $s (f32x4.mul (local.get $s) (local.get $vscale)))))
        (local.set $nv (f32x4.add (f32x4.mul (v128.load (i32.add (local.get $v) (local.get $i))) (local.get $vm))
          (local.get $s)))
        (v128.store (i32.add (local.get $vo) (local.get $i)) (local.get $nv))
        (v128.store (i32.add (local.get $wo) (local.get $i))
          (f32x4.sub (local.get $x) (f32x4.mul (local.get $nv) (local.get $vlr))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $l))))

  ;; exp(y) for y <= 0 (float32, ~1 ulp): y clamped at -87 (a normal result), k = round(y / ln 2),
  ;; r = y - k ln 2 in two parts, exp(r) by Cephes' expf polynomial, times 2^k through the exponent bits.
  (func $exp_neg (param $y v128) (result v128)
    (local $k v128) (local $r v128) (local $p v128)
    (local.set $y (f32x4.max (local.get $y) (f32x4.splat (f32.const -87))))
    (local.set $k (f32x4.nearest (f32x4.mul (local.get $y) (f32x4.splat (f32.const 1.44269504088896341)))))
    (local.set $r (f32x4.sub (f32x4.sub (local.get $y) (f32x4.mul (local.get $k) (f32x4.splat (f32.const 0.693359375))))
      (f32x4.mul (local.get $k) (f32x4.splat (f32.const -2.12194440e-4)))))
    (local.set $p (f32x4.splat (f32.const 1.9875691500e-4)))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (f32x4.splat (f32.const 1.3981999507e-3))))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (f32x4.splat (f32.const 8.3334519073e-3))))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (f32x4.splat (f32.const 4.1665795894e-2))))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (f32x4.splat (f32.const 1.6666665459e-1))))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (f32x4.splat (f32.const 5.0000001201e-1))))
    (local.set $p (f32x4.add (f32x4.add (f32x4.mul (f32x4.mul (local.get $p) (local.get $r)) (local.get $r)) (local.get $r))
      (f32x4.splat (f32.const 1))))
    (f32x4.mul (local.get $p)
      (i32x4.shl (i32x4.add (i32x4.trunc_sat_f32x4_s (local.get $k)) (i32x4.splat (i32.const 127))) (i32.const 23))))

  ;; log(u) for 1 <= u <= 2 (float32, ~1 ulp): Cephes' logf, u = 2^e m with m in [sqrt(1/2), sqrt(2)).
  (func $log_1_2 (param $u v128) (result v128)
    (local $big v128) (local $e v128) (local $f v128) (local $z v128) (local $p v128)
    (local.set $big (f32x4.gt (local.get $u) (f32x4.splat (f32.const 1.41421356237309505))))
    (local.set $e (v128.and (local.get $big) (f32x4.splat (f32.const 1))))
    (local.set $f (f32x4.sub (v128.bitselect (f32x4.mul (local.get $u) (f32x4.splat (f32.const 0.5))) (local.get $u)
      (local.get $big)) (f32x4.splat (f32.const 1))))
    (local.set $z (f32x4.mul (local.get $f) (local.get $f)))
    (local.set $p (f32x4.splat (f32.const 7.0376836292e-2)))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $f)) (f32x4.splat (f32.const -1.1514610310e-1))))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $f)) (f32x4.splat (f32.const 1.1676998740e-1))))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $f)) (f32x4.splat (f32.const -1.2420140846e-1))))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $f)) (f32x4.splat (f32.const 1.4249322787e-1))))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $f)) (f32x4.splat (f32.const -1.6668057665e-1))))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $f)) (f32x4.splat (f32.const 2.0000714765e-1))))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $f)) (f32x4.splat (f32.const -2.4999993993e-1))))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $f)) (f32x4.splat (f32.const 3.3333331174e-1))))
    (local.set $p (f32x4.mul (f32x4.mul (local.get $p) (local.get $f)) (local.get $z)))
    (local.set $p (f32x4.add (local.get $p) (f32x4.mul (local.get $e) (f32x4.splat (f32.const -2.12194440e-4)))))
    (local.set $p (f32x4.sub (local.get $p) (f32x4.mul (local.get $z) (f32x4.splat (f32.const 0.5)))))
    (f32x4.add (f32x4.add (local.get $f) (local.get $p)) (f32x4.mul (local.get $e) (f32x4.splat (f32.const 0.693359375)))))

  ;; Sigmoid focal loss with gamma 2 over `n` floats (a multiple of 4) of logits x and targets z:
  ;;   e = exp(-|x|), bce = max(x, 0) - x z + log1p(e), p = sigmoid(x), q = 1 - p_t = z (1 - p) + (1 - z) p,
  ;;   loss = q^2 (z alpha + (1 - z)(1 - alpha)) bce, g = (z - (1 - alpha)) q^2 (-2 (1 - q) bce - q),
  ;; with 1 - q = z p + (1 - z)(1 - p) taken without cancelling,
  ;; as lib/loss.ts's focalLossAndGrad in float32. log1p(e) = log(1 + e) e / ((1 + e) - 1), exact where
  ;; 1 + e rounds (Goldberg). g goes to `g`; the loss's sums per lane, in blocks of 64 floats, into acc f64[4].
  (func (export "focal") (param $x i32) (param $z i32) (param $g i32) (param $n i32) (param $alpha f32) (param $acc i32)
    (local $i i32) (local $end i32) (local $blk i32) (local $xv v128) (local $zv v128) (local $e v128) (local $u v128)
    (local $d v128) (local $l v128) (local $bce v128) (local $p v128) (local $q v128) (local $m v128) (local $s v128)
    (local $one v128) (local $va v128) (local $vna v128) (local $ge v128) (local $a v128) (local $b v128)
    (local $pc v128) (local $zc v128) (local $qc v128)
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (local.set $one (f32x4.splat (f32.const 1)))
    (local.set $va (f32x4.splat (local.get $alpha)))
    (local.set $vna (f32x4.sub (local.get $one) (local.get $va)))
    (block $done
      (loop $blocks
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $blk (i32.add (local.get $i) (i32.const 256)))
        (if (i32.gt_u (local.get $blk) (local.get $end)) (then (local.set $blk (local.get $end))))
        (local.set $s (v128.const i64x2 0 0))
        (loop $l4
          (local.set $xv (v128.load (i32.add (local.get $x) (local.get $i))))
          (local.set $zv (v128.load (i32.add (local.get $z) (local.get $i))))
          (local.set $e (call $exp_neg (f32x4.neg (f32x4.abs (local.get $xv)))))
          (local.set $u (f32x4.add (local.get $one) (local.get $e)))
          (local.set $d (f32x4.sub (local.get $u) (local.get $one)))
          (local.set $l (v128.bitselect (local.get $e)
            (f32x4.mul (call $log_1_2 (local.get $u)) (f32x4.div (local.get $e) (local.get $d)))
            (f32x4.eq (local.get $d) (v128.const f32x4 0 0 0 0))))
          (local.set $bce (f32x4.add (f32x4.sub (f32x4.max (local.get $xv) (v128.const f32x4 0 0 0 0))
            (f32x4.mul (local.get $xv) (local.get $zv))) (local.get $l)))
          ;; p and 1 - p as 1 / (1 + e) and e / (1 + e), each where it is which: 1 - p never cancels.
          (local.set $ge (f32x4.ge (local.get $xv) (v128.const f32x4 0 0 0 0)))
          (local.set $a (f32x4.div (local.get $one) (local.get $u)))
          (local.set $b (f32x4.div (local.get $e) (local.get $u)))
          (local.set $p (v128.bitselect (local.get $a) (local.get $b) (local.get $ge)))
          (local.set $pc (v128.bitselect (local.get $b) (local.get $a) (local.get $ge)))
          (local.set $zc (f32x4.sub (local.get $one) (local.get $zv)))
          (local.set $q (f32x4.add (f32x4.mul (local.get $zv) (local.get $pc)) (f32x4.mul (local.get $zc) (local.get $p))))
          (local.set $qc (f32x4.add (f32x4.mul (local.get $zv) (local.get $p)) (f32x4.mul (local.get $zc) (local.get $pc))))
          (local.set $m (f32x4.mul (local.get $q) (local.get $q)))
          (local.set $s (f32x4.add (local.get $s) (f32x4.mul (f32x4.mul (local.get $m)
            (f32x4.add (f32x4.mul (local.get $zv) (local.get $va)) (f32x4.mul (local.get $zc) (local.get $vna))))
            (local.get $bce))))
          (v128.store (i32.add (local.get $g) (local.get $i))
            (f32x4.mul (f32x4.mul (f32x4.sub (local.get $zv) (local.get $vna)) (local.get $m))
              (f32x4.sub (f32x4.mul (f32x4.mul (local.get $qc) (local.get $bce)) (f32x4.splat (f32.const -2)))
                (local.get $q))))
          (local.set $i (i32.add (local.get $i) (i32.const 16)))
          (br_if $l4 (i32.lt_u (local.get $i) (local.get $blk))))
        (v128.store (local.get $acc) (f64x2.add (v128.load (local.get $acc)) (f64x2.promote_low_f32x4 (local.get $s))))
        (v128.store offset=16 (local.get $acc) (f64x2.add (v128.load offset=16 (local.get $acc))
          (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $s) (local.get $s)))))
        (br $blocks))))
)
