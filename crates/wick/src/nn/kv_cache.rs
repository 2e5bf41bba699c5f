//! The key/value cache of a decoder, owned by the caller and passed into `forward`.
//!
//! Buffers are allocated once at (batch, kv_heads, max_len, head_dim) per layer and written in
//! place, so a decode step copies only its own keys/values and attention reads a narrowed view.
//! All sequences of a batch share the column index; padding (left padding in the usual
//! generation setup) is tracked per sequence and column, and positions count real tokens only,
//! so a padded sequence sees the same positions as it would alone.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// Marks a cache column that holds padding.
const PAD: i64 = -1;
/// Added to masked attention scores (f32); finite so a row with nothing visible (a padding
/// query) stays a harmless uniform row instead of NaN.
const MASKED: f32 = -1e30;

/// One forward call's placement: which columns the new tokens take and their positions.
#[derive(Debug, Clone)]
pub struct Step {
    batch: usize,
    /// First column written.
    start: usize,
    /// New tokens per sequence.
    len: usize,
    /// (batch × len) position of each new token; padding gets its sequence's next position.
    positions: Vec<u32>,
    /// (batch × (start + len)) position of every visible column, PAD for padding.
    key_pos: Vec<i64>,
    /// Next position of each sequence after this step.
    next_pos: Vec<i64>,
}

impl Step {
    /// Plans `len` new tokens per sequence after `start` columns whose positions are `key_pos`
    /// (batch × start) and whose sequences continue at `next_pos`. `mask` is (batch × len),
    /// 1 for a real token and 0 for padding; None means all real.
    fn plan(
        batch: usize,
        start: usize,
        len: usize,
        prev_key_pos: &[i64],
        prev_next_pos: &[i64],
        stride: usize,
        mask: Option<&[u8]>,
    ) -> Step {
        let total = start + len;
        let mut key_pos = Vec::with_capacity(batch * total);
        let mut positions = Vec::with_capacity(batch * len);
        let mut next_pos = prev_next_pos.to_vec();
        for (b, next) in next_pos.iter_mut().enumerate() {
            key_pos.extend_from_slice(&prev_key_pos[b * stride..b * stride + start]);
            for i in 0..len {
                let real = mask.is_none_or(|m| m[b * len + i] != 0);
                positions.push(*next as u32);
                if real {
                    key_pos.push(*next);
                    *next += 1;
                } else {
                    key_pos.push(PAD);
                }
            }
        }
        Step {
            batch,
            start,
            len,
            positions,
            key_pos,
            next_pos,
        }
    }

    /// A step with no history (a forward without cache).
    pub fn fresh(batch: usize, len: usize, mask: Option<&[u8]>) -> Step {
        Step::plan(batch, 0, len, &[], &vec![0; batch], 0, mask)
    }

    pub fn start(&self) -> usize {
        self.start
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Real tokens of each sequence once this step is in (padding excluded).
    pub fn seq_lens(&self) -> Vec<usize> {
        self.next_pos.iter().map(|&p| p as usize).collect()
    }

    /// (batch, len) u32 positions of the new tokens.
    pub fn positions(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(
            self.positions.clone(),
            (self.batch, self.len),
            device,
        )?)
    }

    /// Additive f32 bias (batch, 1, len, start + len): causal, padding masked, and for
    /// `window = Some(w)` only the last `w` positions visible (transformers' sliding window,
    /// `q_pos - k_pos < w`). None when nothing is masked (a decode step without padding).
    pub fn attention_bias(&self, window: Option<usize>, device: &Device) -> Result<Option<Tensor>> {
        let total = self.start + self.len;
        let mut bias = vec![0f32; self.batch * self.len * total];
        let mut any_masked = false;
        for b in 0..self.batch {
            let keys = &self.key_pos[b * total..(b + 1) * total];
            for i in 0..self.len {
                let q_col = self.start + i;
                let q_pos = self.positions[b * self.len + i] as i64;
                let row = &mut bias[(b * self.len + i) * total..(b * self.len + i + 1) * total];
                for (j, (&k_pos, out)) in keys.iter().zip(row.iter_mut()).enumerate() {
                    let visible = k_pos != PAD
                        && j <= q_col
                        && window.is_none_or(|w| q_pos - k_pos < w as i64);
                    if !visible {
                        *out = MASKED;
                        any_masked = true;
                    }
                }
            }
        }
        if !any_masked {
            return Ok(None);
        }
        let t = Tensor::from_vec(bias, (self.batch, 1, self.len, total), device)?;
        Ok(Some(t))
    }
}

/// Per-layer key/value buffers plus the per-sequence bookkeeping.
#[derive(Debug)]
pub struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    batch: usize,
    max_len: usize,
    len: usize,
    /// (batch × max_len) position held by each column, PAD for padding.
    key_pos: Vec<i64>,
    /// Next position of each sequence.
    next_pos: Vec<i64>,
    /// (batch × max_len) token id fed at each column, where the model records it.
    ids: Vec<u32>,
}

impl KvCache {
    /// Zeroed buffers of (batch, kv_heads, max_len, head_dim) for each of `layers` layers.
    pub fn new(
        layers: usize,
        batch: usize,
        kv_heads: usize,
        head_dim: usize,
        max_len: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if batch == 0 || max_len == 0 {
            return Err(Error::InvalidArgument {
                name: "cache",
                message: format!("batch ({batch}) and max_len ({max_len}) must be positive"),
            });
        }
        let shape = (batch, kv_heads, max_len, head_dim);
        let zeros = || Tensor::zeros(shape, dtype, device);
        Ok(KvCache {
            k: (0..layers)
                .map(|_| zeros())
                .collect::<candle_core::Result<_>>()?,
            v: (0..layers)
                .map(|_| zeros())
                .collect::<candle_core::Result<_>>()?,
            batch,
            max_len,
            len: 0,
            key_pos: vec![PAD; batch * max_len],
            next_pos: vec![0; batch],
            ids: vec![0; batch * max_len],
        })
    }

    /// Columns filled so far (the same for every sequence; padding included).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn num_layers(&self) -> usize {
        self.k.len()
    }

    /// Real tokens seen by each sequence (its next position).
    pub fn seq_lens(&self) -> Vec<usize> {
        self.next_pos.iter().map(|&p| p as usize).collect()
    }

    /// The full (batch, kv_heads, max_len, head_dim) key and value buffers of `layer`.
    pub fn buffers(&self, layer: usize) -> Option<(&Tensor, &Tensor)> {
        Some((self.k.get(layer)?, self.v.get(layer)?))
    }

    /// Records the token ids `ids` (batch × step.len) of `step`'s columns, so a model whose
    /// rotary table depends on the sequence length (LongRoPE) can recompute the history with
    /// [`KvCache::history`] when a sequence grows past its threshold.
    pub fn record_ids(&mut self, step: &Step, ids: &[u32]) -> Result<()> {
        if ids.len() != step.batch * step.len || step.start + step.len > self.max_len {
            return Err(Error::InvalidArgument {
                name: "cache",
                message: format!(
                    "{} ids for a step of {} x {} at column {} (max_len {})",
                    ids.len(),
                    step.batch,
                    step.len,
                    step.start,
                    self.max_len
                ),
            });
        }
        if step.len == 0 {
            return Ok(());
        }
        for (b, row) in ids.chunks(step.len).enumerate() {
            let at = b * self.max_len + step.start;
            self.ids[at..at + step.len].copy_from_slice(row);
        }
        Ok(())
    }

    /// The recorded ids (batch × len) of the cached columns and their mask (1 real, 0 padding).
    pub fn history(&self) -> (Vec<u32>, Vec<u8>) {
        let mut ids = Vec::with_capacity(self.batch * self.len);
        let mut mask = Vec::with_capacity(self.batch * self.len);
        for b in 0..self.batch {
            let cols = b * self.max_len..b * self.max_len + self.len;
            ids.extend_from_slice(&self.ids[cols.clone()]);
            mask.extend(self.key_pos[cols].iter().map(|&p| u8::from(p != PAD)));
        }
        (ids, mask)
    }

    /// Re-allocates the buffers with room for `max_len` columns, keeping what is cached. Callers
    /// that don't know the final length grow geometrically, so the copies stay O(n) in total.
    pub fn grow(&mut self, max_len: usize) -> Result<()> {
        if max_len <= self.max_len {
            return Ok(());
        }
        let regrow = |old: &Tensor| -> candle_core::Result<Tensor> {
            let (b, h, _, d) = old.dims4()?;
            let new = Tensor::zeros((b, h, max_len, d), old.dtype(), old.device())?;
            if self.len > 0 {
                new.slice_set(&old.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
            }
            Ok(new)
        };
        self.k = self
            .k
            .iter()
            .map(regrow)
            .collect::<candle_core::Result<_>>()?;
        self.v = self
            .v
            .iter()
            .map(regrow)
            .collect::<candle_core::Result<_>>()?;
        let mut key_pos = vec![PAD; self.batch * max_len];
        let mut ids = vec![0; self.batch * max_len];
        for b in 0..self.batch {
            let (new, old) = (b * max_len, b * self.max_len);
            key_pos[new..new + self.len].copy_from_slice(&self.key_pos[old..old + self.len]);
            ids[new..new + self.len].copy_from_slice(&self.ids[old..old + self.len]);
        }
        self.key_pos = key_pos;
        self.ids = ids;
        self.max_len = max_len;
        Ok(())
    }

    /// Empties the cache for a new batch, keeping its buffers.
    pub fn reset(&mut self) {
        self.len = 0;
        self.key_pos.fill(PAD);
        self.next_pos.fill(0);
    }

    /// Plans `len` new tokens per sequence (`mask` as in [`Step`]); nothing changes until
    /// [`KvCache::commit`].
    pub fn begin(&self, batch: usize, len: usize, mask: Option<&[u8]>) -> Result<Step> {
        if batch != self.batch {
            return Err(Error::InvalidArgument {
                name: "input_ids",
                message: format!("batch of {batch} for a cache built for {}", self.batch),
            });
        }
        if self.len + len > self.max_len {
            return Err(Error::InvalidArgument {
                name: "input_ids",
                message: format!(
                    "{len} more tokens after {} overflow the cache of {} (create it with a larger max_len)",
                    self.len, self.max_len
                ),
            });
        }
        Ok(Step::plan(
            batch,
            self.len,
            len,
            &self.key_pos,
            &self.next_pos,
            self.max_len,
            mask,
        ))
    }

    /// Writes `k`/`v` (batch, kv_heads, step.len, head_dim) of `layer` at the step's columns
    /// and returns views of all keys/values up to and including them (no copy of the history).
    pub fn write(
        &mut self,
        layer: usize,
        step: &Step,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let (Some(kb), Some(vb)) = (self.k.get(layer), self.v.get(layer)) else {
            return Err(Error::InvalidArgument {
                name: "cache",
                message: format!("layer {layer} of a cache with {} layers", self.k.len()),
            });
        };
        kb.slice_set(&k.contiguous()?, 2, step.start)?;
        vb.slice_set(&v.contiguous()?, 2, step.start)?;
        let total = step.start + step.len;
        Ok((kb.narrow(2, 0, total)?, vb.narrow(2, 0, total)?))
    }

    /// Records the step once every layer has been written.
    pub fn commit(&mut self, step: Step) {
        let total = step.start + step.len;
        for b in 0..self.batch {
            let row = &mut self.key_pos[b * self.max_len..b * self.max_len + total];
            row.copy_from_slice(&step.key_pos[b * total..(b + 1) * total]);
        }
        self.next_pos = step.next_pos;
        self.len = total;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(t: &Tensor, c: usize) -> Vec<f32> {
        t.narrow(2, c, 1)
            .and_then(|t| t.flatten_all()?.to_vec1())
            .unwrap_or_default()
    }

    #[test]
    fn grow_keeps_cached_columns() -> Result<()> {
        let dev = Device::Cpu;
        let mut cache = KvCache::new(1, 1, 1, 2, 2, DType::F32, &dev)?;
        let kv = Tensor::new(&[[[[1f32, 2.], [3., 4.]]]], &dev)?;
        let step = cache.begin(1, 2, None)?;
        cache.write(0, &step, &kv, &kv)?;
        cache.commit(step);
        cache.grow(5)?;
        assert_eq!(
            (cache.len(), cache.max_len(), cache.seq_lens()),
            (2, 5, vec![2])
        );
        let next = Tensor::new(&[[[[5f32, 6.]]]], &dev)?;
        let step = cache.begin(1, 1, None)?;
        assert_eq!(step.start(), 2);
        let (k, _) = cache.write(0, &step, &next, &next)?;
        cache.commit(step);
        assert_eq!(
            k.flatten_all()?.to_vec1::<f32>()?,
            vec![1., 2., 3., 4., 5., 6.]
        );
        Ok(())
    }

    #[test]
    fn recorded_ids_and_padding_come_back_as_history_after_grow() -> Result<()> {
        let dev = Device::Cpu;
        let mut cache = KvCache::new(1, 2, 1, 2, 3, DType::F32, &dev)?;
        let kv = |n| Tensor::zeros((2, 1, n, 2), DType::F32, &dev);
        // Row 1 is left-padded by one column.
        let step = cache.begin(2, 2, Some(&[1, 1, 0, 1]))?;
        cache.record_ids(&step, &[7, 8, 0, 9])?;
        cache.write(0, &step, &kv(2)?, &kv(2)?)?;
        cache.commit(step);
        cache.grow(4)?;
        let step = cache.begin(2, 1, None)?;
        assert!(
            cache.record_ids(&step, &[1]).is_err(),
            "one id per sequence"
        );
        cache.record_ids(&step, &[10, 11])?;
        cache.write(0, &step, &kv(1)?, &kv(1)?)?;
        cache.commit(step);
        let (ids, mask) = cache.history();
        assert_eq!(ids, vec![7, 8, 10, 0, 9, 11]);
        assert_eq!(mask, vec![1, 1, 1, 0, 1, 1]);
        Ok(())
    }

    #[test]
    fn append_writes_in_place_and_tracks_length() -> Result<()> {
        let dev = Device::Cpu;
        let mut cache = KvCache::new(2, 1, 2, 4, 6, DType::F32, &dev)?;
        let ids_before: Vec<_> = (0..2)
            .map(|l| cache.buffers(l).map(|(k, v)| (k.id(), v.id())))
            .collect();
        for (n, fill) in [(3usize, 1f32), (1, 2.0), (2, 3.0)] {
            let step = cache.begin(1, n, None)?;
            for layer in 0..2 {
                let k = Tensor::full(fill, (1, 2, n, 4), &dev)?;
                let (ks, vs) = cache.write(layer, &step, &k, &k.affine(-1.0, 0.0)?)?;
                assert_eq!(ks.dims(), &[1, 2, step.start() + n, 4]);
                assert_eq!(vs.dims(), ks.dims());
            }
            cache.commit(step);
        }
        assert_eq!(cache.len(), 6);
        assert_eq!(cache.seq_lens(), vec![6]);
        let (k, v) = cache.buffers(1).expect("layer 1");
        assert_eq!(col(k, 2), vec![1.0; 8]);
        assert_eq!(col(k, 3), vec![2.0; 8]);
        assert_eq!(col(v, 5), vec![-3.0; 8]);
        // Same buffers as at creation: nothing was reallocated or concatenated.
        let ids_after: Vec<_> = (0..2)
            .map(|l| cache.buffers(l).map(|(k, v)| (k.id(), v.id())))
            .collect();
        assert_eq!(ids_before, ids_after);
        // Full: one more token is refused with a message, and reset empties it.
        let err = cache.begin(1, 1, None).expect_err("overflow");
        assert!(err.to_string().contains("overflow the cache of 6"), "{err}");
        cache.reset();
        assert!(cache.is_empty());
        Ok(())
    }

    #[test]
    fn left_padding_positions_and_mask() -> Result<()> {
        let dev = Device::Cpu;
        let mut cache = KvCache::new(1, 2, 1, 2, 8, DType::F32, &dev)?;
        // Sequence 1 has two pad tokens on the left.
        let step = cache.begin(2, 4, Some(&[1, 1, 1, 1, 0, 0, 1, 1]))?;
        assert_eq!(
            step.positions(&dev)?.to_vec2::<u32>()?,
            vec![vec![0, 1, 2, 3], vec![0, 0, 0, 1]]
        );
        let bias = step.attention_bias(None, &dev)?.expect("causal mask");
        let row = |b: usize, i: usize| -> Vec<bool> {
            let r: Vec<f32> = bias
                .get(b)
                .and_then(|t| t.get(0)?.get(i)?.to_vec1())
                .unwrap_or_default();
            r.iter().map(|&x| x == 0.0).collect()
        };
        assert_eq!(row(0, 1), vec![true, true, false, false]);
        assert_eq!(row(1, 3), vec![false, false, true, true]);
        cache.commit(step);
        // Decode: positions continue per sequence; the pad columns stay masked.
        let step = cache.begin(2, 1, None)?;
        assert_eq!(
            step.positions(&dev)?.to_vec2::<u32>()?,
            vec![vec![4], vec![2]]
        );
        assert!(step.attention_bias(None, &dev)?.is_some());
        // Without padding a decode step needs no mask; a sliding window of 2 does.
        let solo = Step::fresh(1, 3, None);
        assert!(solo.attention_bias(None, &dev)?.is_some()); // causal
        let mut single = KvCache::new(1, 1, 1, 2, 8, DType::F32, &dev)?;
        single.commit(single.begin(1, 3, None)?);
        let step = single.begin(1, 1, None)?;
        assert!(step.attention_bias(None, &dev)?.is_none());
        let windowed = step.attention_bias(Some(2), &dev)?.expect("window");
        let w: Vec<f32> = windowed.flatten_all()?.to_vec1()?;
        assert_eq!(
            w.iter().map(|&x| x == 0.0).collect::<Vec<_>>(),
            vec![false, false, true, true]
        );
        Ok(())
    }
}
