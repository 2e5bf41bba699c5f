//! Property tests of the KV cache against a plain model of it: over random sequences of steps
//! (random lengths and padding masks), grows, resets and overflowing steps, the cache holds
//! exactly the columns written, in order; each sequence's positions count its real tokens only;
//! the attention bias shows a query exactly the real, earlier-or-same columns of its own
//! sequence; and a step that does not fit fails without changing anything.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use candle_core::{DType, Device, Tensor};
use proptest::prelude::*;
use wick::nn::kv_cache::KvCache;

const HEAD_DIM: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    /// New tokens per sequence with a (batch × len) padding mask (true = real).
    Step(Vec<bool>, usize),
    Grow(usize),
    Reset,
}

fn ops(batch: usize) -> impl Strategy<Value = Vec<Op>> {
    let step = (1usize..5).prop_flat_map(move |len| {
        prop::collection::vec(prop::bool::weighted(0.8), batch * len)
            .prop_map(move |m| Op::Step(m, len))
    });
    prop::collection::vec(
        prop_oneof![8 => step, 1 => (1usize..24).prop_map(Op::Grow), 1 => Just(Op::Reset)],
        1..25,
    )
}

/// What the cache should hold: per column, its value tag and, per sequence, its position
/// (None for padding).
#[derive(Default)]
struct Model {
    columns: Vec<f32>,
    key_pos: Vec<Vec<Option<u32>>>,
    next_pos: Vec<u32>,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_cache_matches_a_plain_model(batch in 1usize..4, max_len in 1usize..12, ops in (1usize..4).prop_flat_map(ops)) {
        // `ops` was drawn for a batch of its own; re-cut each mask to this batch.
        let dev = Device::Cpu;
        let mut cache = KvCache::new(1, batch, 1, HEAD_DIM, max_len, DType::F32, &dev).unwrap();
        let mut model = Model { key_pos: vec![Vec::new(); batch], next_pos: vec![0; batch], ..Default::default() };
        let mut capacity = max_len;
        let mut tag = 0f32;
        for op in ops {
            match op {
                Op::Reset => {
                    cache.reset();
                    model = Model { key_pos: vec![Vec::new(); batch], next_pos: vec![0; batch], ..Default::default() };
                }
                Op::Grow(n) => {
                    cache.grow(n).unwrap();
                    capacity = capacity.max(n);
                }
                Op::Step(mask, len) => {
                    let mask: Vec<u8> = (0..batch * len).map(|i| u8::from(mask[i % mask.len()])).collect();
                    let before = cache.len();
                    let Ok(step) = cache.begin(batch, len, Some(&mask)) else {
                        prop_assert!(before + len > capacity, "a step that fits was refused");
                        prop_assert_eq!(cache.len(), before, "a refused step changes nothing");
                        continue;
                    };
                    prop_assert!(before + len <= capacity);
                    // Positions of the new tokens: the sequence's real tokens before each.
                    let positions: Vec<u32> = step.positions(&dev).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                    let mut new_pos = vec![Vec::new(); batch];
                    for b in 0..batch {
                        for i in 0..len {
                            prop_assert_eq!(positions[b * len + i], model.next_pos[b], "position of ({}, {})", b, i);
                            let real = mask[b * len + i] == 1;
                            new_pos[b].push(real.then_some(model.next_pos[b]));
                            model.next_pos[b] += u32::from(real);
                        }
                    }
                    // The bias: query (b, i) sees column j iff j is real in b and not after it.
                    let total = before + len;
                    let bias = step.attention_bias(None, &dev).unwrap();
                    let bias: Vec<f32> = match bias {
                        Some(t) => t.flatten_all().unwrap().to_vec1().unwrap(),
                        None => vec![0.0; batch * len * total],
                    };
                    for b in 0..batch {
                        let keys: Vec<Option<u32>> = model.key_pos[b].iter().chain(&new_pos[b]).copied().collect();
                        for i in 0..len {
                            for (j, k) in keys.iter().enumerate() {
                                let visible = k.is_some() && j <= before + i;
                                let seen = bias[(b * len + i) * total + j] == 0.0;
                                prop_assert_eq!(seen, visible, "query ({}, {}) column {}", b, i, j);
                            }
                        }
                    }
                    // Each new column's keys carry a tag unique to (sequence, column).
                    let values: Vec<f32> = (0..batch * len * HEAD_DIM).map(|i| tag + i as f32).collect();
                    let kv = Tensor::from_vec(values, (batch, 1, len, HEAD_DIM), &dev).unwrap();
                    let (k, _) = cache.write(0, &step, &kv, &kv).unwrap();
                    prop_assert_eq!(k.dim(2).unwrap(), total);
                    cache.commit(step);
                    for i in 0..len {
                        model.columns.push(tag + (i * HEAD_DIM) as f32);
                    }
                    for (keys, new) in model.key_pos.iter_mut().zip(&new_pos) {
                        keys.extend(new.iter().copied());
                    }
                    tag += (batch * len * HEAD_DIM) as f32;
                }
            }
            // After every op: the columns and lengths the model says.
            prop_assert_eq!(cache.len(), model.columns.len());
            prop_assert_eq!(cache.max_len(), capacity);
            let lens: Vec<usize> = model.next_pos.iter().map(|&p| p as usize).collect();
            prop_assert_eq!(cache.seq_lens(), lens);
            if !cache.is_empty() {
                let (k, _) = cache.buffers(0).unwrap();
                let first: Vec<f32> = k.narrow(2, 0, cache.len()).unwrap().get(0).unwrap().get(0).unwrap()
                    .narrow(1, 0, 1).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                prop_assert_eq!(first, model.columns.clone(), "sequence 0's keys, column by column");
            }
        }
    }
}
