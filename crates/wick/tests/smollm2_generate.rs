//! Real SmolLM2-135M-Instruct from its Q4_1 GGUF against transformers on the same dequantized
//! weights (fixtures/smollm2_generate/gen.py).

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use candle_core::{DType, Device, Tensor, D};
use serde::Deserialize;
use testkit::paths::{fixture, real_model};
use wick::generate::load::{load_causal_lm, LoadedLm};
use wick::generate::sampler::SamplingParams;
use wick::generate::{generate, GenerationConfig};
use wick::io::chat_template::ChatMessage;
use wick::io::ModelFiles;

#[derive(Deserialize)]
struct Expected {
    cases: Vec<Case>,
    teacher_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Case {
    prompt: String,
    prompt_ids: Vec<u32>,
    generated_ids: Vec<u32>,
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

#[test]
fn greedy_f32_generation_matches_transformers_token_for_token() {
    let exp = expected();
    let mut lm = load(Some(DType::F32));
    let config = GenerationConfig {
        sampling: SamplingParams::greedy(),
        max_tokens: Some(32),
        eos_token_ids: vec![], // transformers ran without EOS: compare all 32 tokens
        ..Default::default()
    };
    for case in &exp.cases {
        // Our chat template + GGUF tokenizer build the same prompt transformers did.
        let template = lm.chat_template.as_ref().unwrap();
        let text = template
            .render(&[ChatMessage::user(case.prompt.as_str())], true)
            .unwrap();
        let ids = lm.tokenizer.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(ids, case.prompt_ids, "prompt ids for {:?}", case.prompt);

        let out = generate(&mut lm.model, &lm.tokenizer, &ids, &config, |_| {}).unwrap();
        println!("{:?} -> {:?}", case.prompt, out.text);
        assert_eq!(
            out.token_ids, case.generated_ids,
            "prompt {:?}",
            case.prompt
        );
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
