//! The parts of CPython's `random.Random` that the standard corpus generator uses.
//!
//! The standard corpus is defined by the bytes the reference script `corpus.py` prints
//! with CPython, so this is a bit-exact port rather than "a Zipf generator": the Mersenne Twister
//! (MT19937) seeded through `init_by_array` from the integer seed
//! (`Modules/_randommodule.c`), `random()` as a 53-bit float from two 32-bit outputs, and
//! `getrandbits`/`_randbelow`/`randint`/`randrange`/`choice`/`sample` as `Lib/random.py`
//! writes them (3.x). Any change in the order or number of draws changes every document
//! after it, which the byte-for-byte test against `corpus.py` catches.
//!
//! Single-threaded, plain state; no invariants beyond MT19937's own.

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// CPython's `random.Random`, limited to what the corpus needs.
#[derive(Clone)]
pub struct PyRandom {
    state: Box<[u32; N]>,
    index: usize,
}

impl PyRandom {
    /// `random.Random(seed)` for a non-negative integer seed: CPython seeds with the
    /// absolute value's 32-bit words, least significant first (`[0]` for zero).
    pub fn new(seed: u64) -> Self {
        let mut key = Vec::with_capacity(2);
        let mut rest = seed;
        while rest > 0 {
            key.push((rest & 0xffff_ffff) as u32);
            rest >>= 32;
        }
        if key.is_empty() {
            key.push(0);
        }
        let mut rng = Self {
            state: Box::new([0; N]),
            index: N + 1,
        };
        rng.init_by_array(&key);
        rng
    }

    fn init_genrand(&mut self, seed: u32) {
        self.state[0] = seed;
        for i in 1..N {
            let prev = self.state[i - 1];
            self.state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        self.index = N;
    }

    fn init_by_array(&mut self, key: &[u32]) {
        self.init_genrand(19_650_218);
        let mut i = 1usize;
        let mut j = 0usize;
        let mut k = N.max(key.len());
        while k > 0 {
            let prev = self.state[i - 1];
            self.state[i] = (self.state[i] ^ ((prev ^ (prev >> 30)).wrapping_mul(1_664_525)))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                self.state[0] = self.state[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
            k -= 1;
        }
        k = N - 1;
        while k > 0 {
            let prev = self.state[i - 1];
            self.state[i] = (self.state[i] ^ ((prev ^ (prev >> 30)).wrapping_mul(1_566_083_941)))
                .wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                self.state[0] = self.state[N - 1];
                i = 1;
            }
            k -= 1;
        }
        // MSB is 1, assuring a non-zero initial array.
        self.state[0] = 0x8000_0000;
    }

    fn generate(&mut self) {
        for kk in 0..N {
            let y = (self.state[kk] & UPPER_MASK) | (self.state[(kk + 1) % N] & LOWER_MASK);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            self.state[kk] = self.state[(kk + M) % N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    /// One 32-bit output (`genrand_uint32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.generate();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// `random()`: a float in [0, 1) with 53 random bits.
    pub fn random(&mut self) -> f64 {
        let a = u64::from(self.next_u32() >> 5);
        let b = u64::from(self.next_u32() >> 6);
        (a as f64 * 67_108_864.0 + b as f64) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `getrandbits(k)` for `k <= 32` (all the corpus needs).
    fn getrandbits(&mut self, bits: u32) -> u32 {
        debug_assert!((1..=32).contains(&bits));
        self.next_u32() >> (32 - bits)
    }

    /// `_randbelow_with_getrandbits(n)`: uniform in `[0, n)` by rejection sampling.
    pub fn randbelow(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        let bits = 32 - n.leading_zeros();
        loop {
            let r = self.getrandbits(bits);
            if r < n {
                return r;
            }
        }
    }

    /// `randrange(stop)`.
    pub fn randrange(&mut self, stop: u32) -> u32 {
        self.randbelow(stop)
    }

    /// `randint(a, b)`, both ends included.
    pub fn randint(&mut self, low: u32, high: u32) -> u32 {
        low + self.randbelow(high - low + 1)
    }

    /// `choice(seq)`.
    pub fn choice<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.randbelow(items.len() as u32) as usize]
    }

    /// `sample(population, k)`, pool branch only: CPython takes it when the population
    /// is no larger than its set-size heuristic (21 for `k <= 5`, which covers the corpus:
    /// 20 tags, 1 to 3 drawn). Larger populations would take the set branch, which draws
    /// differently; the caller's assertion keeps us honest.
    pub fn sample<T: Clone>(&mut self, population: &[T], k: usize) -> Vec<T> {
        let n = population.len();
        let mut set_size = 21usize;
        if k > 5 {
            let exponent = ((k * 3) as f64).log(4.0).ceil() as u32;
            set_size += 4usize.pow(exponent);
        }
        assert!(
            n <= set_size && k <= n,
            "only CPython's pool branch of sample() is ported"
        );
        let mut pool: Vec<T> = population.to_vec();
        let mut result = Vec::with_capacity(k);
        for i in 0..k {
            let j = self.randbelow((n - i) as u32) as usize;
            result.push(pool[j].clone());
            pool[j] = pool[n - i - 1].clone();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values from CPython 3.11: `random.Random(42).random()` twice and
    /// `random.Random(7).getrandbits(32)`.
    #[test]
    fn matches_cpython_reference_outputs() {
        let mut rng = PyRandom::new(42);
        assert_eq!(rng.random(), 0.6394267984578837);
        assert_eq!(rng.random(), 0.025010755222666936);
        let mut rng = PyRandom::new(7);
        assert_eq!(rng.next_u32(), 1_390_851_128);
    }
}
