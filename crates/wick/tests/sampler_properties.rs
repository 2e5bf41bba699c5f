//! Property tests of the sampler chain: over random logits (some masked with -inf), random
//! parameters within their documented ranges and random histories, the sampler never returns a
//! masked or banned token, never leaves the vocabulary, respects top-k, and fails cleanly only
//! when nothing is left to sample.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use proptest::prelude::*;
use wick::generate::sampler::{
    FrequencyPresencePenalty, LogitBias, LogitsProcessor, RepetitionPenalty, Sampler,
    SamplingParams, TokenHistory,
};

/// Logits with about a fifth of the entries masked (-inf).
fn logits() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![4 => -60f32..60.0, 1 => Just(f32::NEG_INFINITY)],
        1..300,
    )
}

#[derive(Debug, Clone)]
struct Case {
    logits: Vec<f32>,
    params: SamplingParams,
    history: Vec<u32>,
}

fn case() -> impl Strategy<Value = Case> {
    logits().prop_flat_map(|logits| {
        let vocab = logits.len() as u32;
        let bias = prop::collection::vec(
            (
                0..vocab,
                prop_oneof![3 => -100f32..100.0, 1 => Just(f32::NEG_INFINITY)],
            ),
            0..6,
        );
        let params = (
            (
                prop_oneof![1 => Just(0f32), 3 => 0.01f32..3.0],
                0..vocab as usize + 3,
            ),
            (
                prop_oneof![1 => Just(1f32), 2 => 0.01f32..1.0],
                prop_oneof![1 => Just(0f32), 1 => 0f32..1.0],
            ),
            (0.5f32..2.0, -2f32..2.0, -2f32..2.0),
            (bias, any::<u64>()),
        )
            .prop_map(
                |((temperature, top_k), (top_p, min_p), (rep, freq, pres), (logit_bias, seed))| {
                    SamplingParams {
                        temperature,
                        top_k,
                        top_p,
                        min_p,
                        repetition_penalty: rep,
                        frequency_penalty: freq,
                        presence_penalty: pres,
                        logit_bias,
                        seed: Some(seed),
                    }
                },
            );
        (Just(logits), params, prop::collection::vec(0..vocab, 0..20)).prop_map(
            |(logits, params, history)| Case {
                logits,
                params,
                history,
            },
        )
    })
}

/// The logits after the processors that change values but filter nothing (penalties, bias).
fn before_filters(case: &Case, history: &TokenHistory<'_>) -> Vec<f32> {
    let p = &case.params;
    let mut l = case.logits.clone();
    RepetitionPenalty(p.repetition_penalty)
        .process(&mut l, history)
        .unwrap();
    FrequencyPresencePenalty {
        frequency: p.frequency_penalty,
        presence: p.presence_penalty,
    }
    .process(&mut l, history)
    .unwrap();
    LogitBias(p.logit_bias.clone())
        .process(&mut l, history)
        .unwrap();
    l
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_a_masked_or_banned_token(case in case()) {
        let (prompt, generated) = case.history.split_at(case.history.len() / 2);
        let history = TokenHistory { prompt, generated };
        let reachable = before_filters(&case, &history);
        let mut sampler = Sampler::new(&case.params).unwrap();
        let mut logits = case.logits.clone();
        match sampler.sample(&mut logits, &history) {
            Ok(id) => {
                let id = id as usize;
                prop_assert!(id < case.logits.len(), "token {id} outside the vocabulary");
                prop_assert!(case.logits[id].is_finite(), "masked token {id} sampled");
                prop_assert!(reachable[id].is_finite(), "banned token {id} sampled");
                if case.params.temperature > 0.0 && case.params.top_k > 0 {
                    // At most top_k - 1 tokens rank above it (ties broken by lower id).
                    let above = reachable
                        .iter()
                        .enumerate()
                        .filter(|&(j, &l)| l > reachable[id] || (l == reachable[id] && j < id))
                        .count();
                    prop_assert!(above < case.params.top_k, "rank {above} with top_k {}", case.params.top_k);
                }
                if case.params.temperature == 0.0 {
                    let best = reachable.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    prop_assert_eq!(reachable[id], best, "greedy takes the best");
                }
            }
            Err(e) => {
                prop_assert!(
                    reachable.iter().all(|l| !l.is_finite()),
                    "failed with tokens left to sample: {e}"
                );
            }
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_token(case in case()) {
        let history = TokenHistory { prompt: &case.history, generated: &[] };
        let draw = || Sampler::new(&case.params).unwrap().sample(&mut case.logits.clone(), &history).ok();
        prop_assert_eq!(draw(), draw());
    }
}
