// vec_math.h - math written once for every vector width: a kernel file passes
// its width's traits V (a struct of static inline wrappers over the
// intrinsics: avx2_math.h's Avx2Ops, attention_avx512.cpp's Avx512Ops).
//   V::F / V::I: the float and int32 vector types; set, min, max, mul, add,
//   fmadd (a b + c), fnmadd (c - a b), round (to nearest), cvt (to int32, by
//   rounding), iset, iadd, shl23 and as_float.
// Header-only; each kernel file compiles it with its own ISA flags.
#pragma once

namespace sparq {

// e^x for x in [-87.3, 88.7] (clamped outside): x = n ln2 + r (ln2 split in two
// for an exact n ln2), e^r by its degree-6 polynomial, 2^n built in the exponent
// bits. Relative error ~1e-7 (test_ops' small-op and attention bounds).
template <class V>
inline typename V::F exp_clamped(typename V::F x) {
  x = V::min(V::max(x, V::set(-87.3f)), V::set(88.7f));
  const typename V::F n = V::round(V::mul(x, V::set(1.44269504088896341f)));
  typename V::F r = V::fnmadd(n, V::set(0.693359375f), x);
  r = V::fnmadd(n, V::set(-2.12194440e-4f), r);
  typename V::F p = V::set(1.9875691500e-4f);
  p = V::fmadd(p, r, V::set(1.3981999507e-3f));
  p = V::fmadd(p, r, V::set(8.3334519073e-3f));
  p = V::fmadd(p, r, V::set(4.1665795894e-2f));
  p = V::fmadd(p, r, V::set(1.6666665459e-1f));
  p = V::fmadd(p, r, V::set(5.0000001201e-1f));
  p = V::fmadd(p, V::mul(r, r), V::add(r, V::set(1.f)));
  const typename V::I e = V::shl23(V::iadd(V::cvt(n), V::iset(127)));
  return V::mul(p, V::as_float(e));
}

}  // namespace sparq
