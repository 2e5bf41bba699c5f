//! Real SmolLM2-135M-Instruct from its Q4_1 GGUF against transformers on the same dequantized
//! weights (fixtures/smollm2_generate/gen.py). Greedy tokens are compared up to the reference's
//! first near-tie (testkit::near_tie), logits at every step.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use candle_core::{DType, Device, Tensor, D};
use serde::Deserialize;
use testkit::compare::assert_close;
use testkit::near_tie::assert_decided_prefix_equal;
use testkit::paths::{fixture, real_model};
use wick::generate::load::{load_causal_lm, LoadedLm};
use wick::generate::sampler::SamplingParams;
use wick::generate::score::continuation_logits;
use wick::generate::{generate, GenerationConfig};
use wick::io::chat_template::ChatMessage;
use wick::io::ModelFiles;

/// Logits of two correct f32 runs (transformers', wick's on any CPU) differ by well under this
/// (5e-5 seen); so a step whose reference margin is below twice this is a near-tie either run
/// may resolve either way.
const LOGIT_TOL: f32 = 1e-3;
const NEAR_TIE: f32 = 2.0 * LOGIT_TOL;

#[derive(Deserialize)]
struct Expected {
    cases: Vec<Case>,
    chat: Chat,
    teacher_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Case {
    prompt: String,
    prompt_ids: Vec<u32>,
    generated_ids: Vec<u32>,
    /// The reference's best-minus-second logit at each step.
    margins: Vec<f32>,
    /// The reference's top-5 `(id, logit)` at each step.
    top: Vec<Vec<(u32, f32)>>,
}

#[derive(Deserialize)]
struct Chat {
    max_tokens: usize,
    eos_token_id: u32,
    turns: Vec<ChatTurn>,
}

#[derive(Deserialize)]
struct ChatTurn {
    user: String,
    prompt_ids: Vec<u32>,
    generated_ids: Vec<u32>,
    reply: String,
    margins: Vec<f32>,
    top: Vec<Vec<(u32, f32)>>,
}

fn expected() -> Expected {
    let text = std::fs::read_to_string(fixture("smollm2_generate").join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load(dtype: Option<DType>) -> LoadedLm {
    let path = real_model("SmolLM2-135M-Instruct").join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let files = ModelFiles::resolve(path.to_str().unwrap()).unwrap();
    load_causal_lm(&files, &Device::Cpu, dtype, None).unwrap()
}

fn encode(lm: &LoadedLm, messages: &[ChatMessage]) -> Vec<u32> {
    let template = lm.chat_template.as_ref().unwrap();
    let text = template.render(messages, true).unwrap();
    lm.tokenizer.encode(text, false).unwrap().get_ids().to_vec()
}

fn greedy(max_tokens: usize, eos: Vec<u32>) -> GenerationConfig {
    GenerationConfig {
        sampling: SamplingParams::greedy(),
        max_tokens: Some(max_tokens),
        eos_token_ids: eos,
        ..Default::default()
    }
}

/// wick's logits at every greedy step of the reference (prompt + its tokens in one pass) match
/// the reference's top-5 there, and wick's argmax is the reference's token except at near-ties.
fn assert_teacher_forced(
    what: &str,
    lm: &LoadedLm,
    prompt: &[u32],
    tokens: &[u32],
    top: &[Vec<(u32, f32)>],
) {
    let rows = continuation_logits(lm.model.model(), prompt, tokens, &Device::Cpu).unwrap();
    let best: Vec<u32> = rows.argmax(D::Minus1).unwrap().to_vec1().unwrap();
    let mut worst = 0f32;
    for (step, want) in top.iter().enumerate() {
        let row: Vec<f32> = rows.get(step).unwrap().to_vec1().unwrap();
        let got: Vec<f32> = want.iter().map(|&(id, _)| row[id as usize]).collect();
        let expected: Vec<f32> = want.iter().map(|&(_, v)| v).collect();
        assert_close(
            &format!("{what} step {step} top-5 logits"),
            &got,
            &expected,
            LOGIT_TOL,
            0.0,
        );
        worst = want
            .iter()
            .zip(&got)
            .fold(worst, |w, (&(_, e), g)| w.max((g - e).abs()));
        let best = best[step];
        let margin = want[0].1 - want[1].1;
        assert!(
            best == tokens[step] || margin < NEAR_TIE,
            "{what} step {step}: wick's argmax {best}, the reference's {} by {margin:.4}",
            tokens[step]
        );
    }
    println!("{what}: top-5 logits within {worst:.2e} of the reference");
}

#[test]
fn greedy_f32_generation_matches_transformers_up_to_the_first_near_tie() {
    let exp = expected();
    let mut lm = load(Some(DType::F32));
    // transformers ran without EOS: compare all 32 tokens.
    let config = greedy(32, vec![]);
    let mut decided = 0;
    for case in &exp.cases {
        // Our chat template + GGUF tokenizer build the same prompt transformers did.
        let ids = encode(&lm, &[ChatMessage::user(case.prompt.as_str())]);
        assert_eq!(ids, case.prompt_ids, "prompt ids for {:?}", case.prompt);
        assert_teacher_forced(&case.prompt, &lm, &ids, &case.generated_ids, &case.top);

        let out = generate(&mut lm.model, &lm.tokenizer, &ids, &config, |_| {}).unwrap();
        let n = assert_decided_prefix_equal(
            &case.prompt,
            &out.token_ids,
            &case.generated_ids,
            &case.margins,
            NEAR_TIE,
        );
        println!(
            "{:?} -> {:?} ({n} of 32 steps before the first near-tie)",
            case.prompt, out.text
        );
        decided += n;
    }
    // The comparison must still cover most steps (the margins are the reference's, so this
    // count is the same on every machine).
    assert!(decided >= 48, "only {decided} of 96 steps are decided");
}

/// The conversation `cli_generate_real::chat_reads_turns_from_stdin` holds: wick builds the same
/// prompts from the history (its own replies included) and answers as transformers does.
#[test]
fn two_turn_chat_matches_transformers() {
    let exp = expected();
    let mut lm = load(Some(DType::F32));
    let config = greedy(exp.chat.max_tokens, vec![exp.chat.eos_token_id]);
    let mut history = Vec::new();
    for turn in &exp.chat.turns {
        history.push(ChatMessage::user(turn.user.as_str()));
        let ids = encode(&lm, &history);
        assert_eq!(ids, turn.prompt_ids, "prompt ids for {:?}", turn.user);
        assert_teacher_forced(&turn.user, &lm, &ids, &turn.generated_ids, &turn.top);
        let out = generate(&mut lm.model, &lm.tokenizer, &ids, &config, |_| {}).unwrap();
        let n = assert_decided_prefix_equal(
            &turn.user,
            &out.token_ids,
            &turn.generated_ids,
            &turn.margins,
            NEAR_TIE,
        );
        assert_eq!(
            n,
            turn.margins.len(),
            "{:?}: a near-tie in the chat reference",
            turn.user
        );
        assert_eq!(out.text, turn.reply);
        history.push(ChatMessage::assistant(out.text));
    }
}

/// Argmax of every position of a teacher-forced pass.
fn top1(lm: &LoadedLm, ids: &[u32]) -> Vec<u32> {
    let input = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let logits = lm.model.model().forward_uncached(&input, None).unwrap();
    logits
        .argmax(D::Minus1)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn quantized_path_agrees_with_f32_on_top1() {
    let exp = expected();
    assert_eq!(exp.teacher_ids.len(), 200);
    let f32_top = top1(&load(Some(DType::F32)), &exp.teacher_ids);
    let q_top = top1(&load(None), &exp.teacher_ids);
    let agree = f32_top.iter().zip(&q_top).filter(|(a, b)| a == b).count();
    println!("quantized vs f32 top-1 agreement: {agree}/200");
    assert!(agree * 100 >= 90 * 200, "only {agree}/200 positions agree");
}
