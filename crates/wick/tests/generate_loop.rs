//! The generation loop, streaming detokenization and stop conditions, driven by a tiny scripted
//! fake model (the real Llama model is wired to `LanguageModel` separately) and real
//! `tokenizers::Tokenizer`s built in code: a GPT-2-style byte-level BPE and a SentencePiece-style
//! BPE with byte fallback.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use std::ops::ControlFlow;
use std::str::FromStr;

use serde_json::{json, Value};
use tokenizers::Tokenizer;
use wick::generate::{
    generate, generate_until, FinishReason, GenerationConfig, IncrementalDecoder, LanguageModel,
    SamplingParams, StopStrings,
};
use wick::Error;

// ---------------------------------------------------------------------------------------------
// Tokenizers

/// GPT-2's byte ↔ printable-char table: byte-level tokens spell bytes with these chars.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(b) {
        return char::from(b);
    }
    let shift = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + shift).unwrap()
}

fn bpe_model(vocab: &serde_json::Map<String, Value>, byte_fallback: bool) -> Value {
    json!({
        "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
        "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": byte_fallback,
        "ignore_merges": false, "vocab": vocab, "merges": []
    })
}

fn added(id: usize, content: &str) -> Value {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
           "normalized": false, "special": true})
}

/// Byte-level BPE: ids 0..256 are the bytes, then whole-word tokens, then `<eos>`.
struct ByteLevel {
    tok: Tokenizer,
}

// Multi-byte pieces only: a single byte would collide with its byte token.
const WORDS: &[&str] = &["Hello", " world", " EN", "ough", " more"];

impl ByteLevel {
    fn new() -> Self {
        let mut vocab = serde_json::Map::new();
        for b in 0..=255u8 {
            vocab.insert(byte_char(b).to_string(), json!(b));
        }
        for (i, w) in WORDS.iter().enumerate() {
            vocab.insert(Self::spell(w), json!(256 + i));
        }
        let eos = 256 + WORDS.len();
        let bl = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                        "use_regex": true});
        let file = json!({
            "version": "1.0", "truncation": null, "padding": null, "normalizer": null,
            "added_tokens": [added(eos, "<eos>")], "pre_tokenizer": bl, "post_processor": null,
            "decoder": bl, "model": bpe_model(&vocab, false)
        });
        ByteLevel {
            tok: Tokenizer::from_str(&file.to_string()).unwrap(),
        }
    }

    fn spell(text: &str) -> String {
        text.bytes().map(byte_char).collect()
    }

    fn word(&self, w: &str) -> u32 {
        self.tok.token_to_id(&Self::spell(w)).unwrap()
    }

    fn eos(&self) -> u32 {
        self.tok.token_to_id("<eos>").unwrap()
    }
}

/// SentencePiece-style (Llama/Mistral tokenizer.json): `▁` for spaces, `<0xNN>` byte fallback,
/// and a decoder that strips the sequence's leading space.
fn sentencepiece() -> Tokenizer {
    let mut vocab = serde_json::Map::new();
    vocab.insert("<unk>".into(), json!(0));
    for b in 0..=255u32 {
        vocab.insert(format!("<0x{b:02X}>"), json!(1 + b));
    }
    for (i, piece) in ["▁The", "▁capital", "▁is", "▁Paris", "▁caf", "."]
        .iter()
        .enumerate()
    {
        vocab.insert(piece.to_string(), json!(257 + i));
    }
    let file = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": null, "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": bpe_model(&vocab, true)
    });
    Tokenizer::from_str(&file.to_string()).unwrap()
}

fn sp_id(tok: &Tokenizer, piece: &str) -> u32 {
    tok.token_to_id(piece).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Fake model

/// Emits `script` one token per step through one-hot logits (so greedy follows it), or, with
/// `script` empty, position-dependent logits for sampling. Checks that the loop feeds positions
/// contiguously, as a KV cache requires.
struct FakeModel {
    script: Vec<u32>,
    vocab: usize,
    context: usize,
    cache_len: usize,
    prompt_len: usize,
    /// (tokens, start_pos) of every call.
    calls: Vec<(Vec<u32>, usize)>,
    resets: usize,
}

impl FakeModel {
    fn scripted(script: Vec<u32>, vocab: usize) -> Self {
        FakeModel {
            script,
            vocab,
            context: 4096,
            cache_len: 0,
            prompt_len: 0,
            calls: Vec::new(),
            resets: 0,
        }
    }
}

impl LanguageModel for FakeModel {
    fn forward_last(&mut self, tokens: &[u32], start_pos: usize) -> wick::Result<Vec<f32>> {
        assert_eq!(start_pos, self.cache_len, "positions must be fed in order");
        assert!(
            start_pos + tokens.len() <= self.context,
            "fed past the context"
        );
        if start_pos == 0 {
            self.prompt_len = tokens.len();
        }
        self.calls.push((tokens.to_vec(), start_pos));
        self.cache_len += tokens.len();
        let step = self.cache_len - self.prompt_len;
        let mut logits = vec![0.0f32; self.vocab];
        match self.script.get(step) {
            Some(&id) => logits[id as usize] = 10.0,
            None if self.script.is_empty() => {
                for (i, l) in logits.iter_mut().enumerate() {
                    *l = ((i * 7 + self.cache_len * 13) % 11) as f32 * 0.3;
                }
            }
            None => panic!("script exhausted at step {step}"),
        }
        Ok(logits)
    }

    fn context_length(&self) -> usize {
        self.context
    }

    fn reset(&mut self) -> wick::Result<()> {
        self.cache_len = 0;
        self.resets += 1;
        Ok(())
    }
}

fn greedy(stop: &[&str], eos: &[u32]) -> GenerationConfig {
    GenerationConfig {
        sampling: SamplingParams::greedy(),
        stop: stop.iter().map(|s| s.to_string()).collect(),
        eos_token_ids: eos.to_vec(),
        ..Default::default()
    }
}

/// Runs `generate` and returns the output plus every delta streamed.
fn run(
    model: &mut FakeModel,
    tok: &Tokenizer,
    prompt: &[u32],
    cfg: &GenerationConfig,
) -> (wick::generate::GenerationOutput, Vec<String>) {
    let mut deltas = Vec::new();
    let out = generate(model, tok, prompt, cfg, |d| deltas.push(d.to_string())).unwrap();
    assert_eq!(
        deltas.concat(),
        out.text,
        "streamed text is the output text"
    );
    assert!(deltas.iter().all(|d| !d.is_empty()));
    (out, deltas)
}

// ---------------------------------------------------------------------------------------------
// Streaming

#[test]
fn multibyte_characters_split_over_byte_tokens_stream_whole() {
    let bl = ByteLevel::new();
    let text = "hé 😀!";
    let mut script: Vec<u32> = text.bytes().map(u32::from).collect();
    script.push(bl.eos());
    let mut model = FakeModel::scripted(script, 300);
    let (out, deltas) = run(
        &mut model,
        &bl.tok,
        &[b'a'.into()],
        &greedy(&[], &[bl.eos()]),
    );
    assert_eq!(deltas, ["h", "é", " ", "😀", "!"]);
    assert_eq!(out.text, text);
    assert_eq!(out.finish_reason, FinishReason::Eos);
    assert_eq!(
        *out.token_ids.last().unwrap(),
        bl.eos(),
        "EOS is in the ids, not the text"
    );
}

#[test]
fn byte_fallback_and_leading_space_decode_as_in_running_text() {
    let tok = sentencepiece();
    let prompt = [
        sp_id(&tok, "▁The"),
        sp_id(&tok, "▁capital"),
        sp_id(&tok, "▁is"),
    ];
    // " Paris café." with é as <0xC3><0xA9>.
    let ids = [
        sp_id(&tok, "▁Paris"),
        sp_id(&tok, "▁caf"),
        sp_id(&tok, "<0xC3>"),
        sp_id(&tok, "<0xA9>"),
        sp_id(&tok, "."),
    ];
    let mut dec = IncrementalDecoder::new(&tok, &prompt);
    let deltas: Vec<String> = ids.iter().map(|&id| dec.push(id).unwrap()).collect();
    assert_eq!(deltas, [" Paris", " caf", "", "é", "."]);
    assert_eq!(dec.finish().unwrap(), "");
    // Without the prompt as context the first space is stripped, as tokenizers decodes it.
    let mut bare = IncrementalDecoder::new(&tok, &[]);
    assert_eq!(bare.push(ids[0]).unwrap(), "Paris");
}

#[test]
fn an_incomplete_character_at_the_end_is_flushed_as_replacement() {
    let bl = ByteLevel::new();
    let mut dec = IncrementalDecoder::new(&bl.tok, &[]);
    assert_eq!(dec.push(u32::from(b'x')).unwrap(), "x");
    assert_eq!(
        dec.push(0xE2).unwrap(),
        "",
        "first byte of a 3-byte char is held"
    );
    assert_eq!(dec.finish().unwrap(), "\u{FFFD}");
}

// ---------------------------------------------------------------------------------------------
// Stop strings

#[test]
fn stop_string_straddling_two_tokens_ends_generation_unprinted() {
    let bl = ByteLevel::new();
    let script = ["Hello", " EN", "D", " more"].map(|w| bl.word(w)).to_vec();
    let mut model = FakeModel::scripted(script, 300);
    let (out, deltas) = run(&mut model, &bl.tok, &[b'>'.into()], &greedy(&["END"], &[]));
    assert_eq!(out.text, "Hello ");
    assert_eq!(deltas, ["Hello", " "], "the `EN` of `END` is never emitted");
    assert_eq!(out.finish_reason, FinishReason::Stop);
    assert_eq!(out.token_ids.len(), 3, "nothing is sampled after the stop");
}

#[test]
fn held_back_text_is_released_when_the_stop_string_does_not_complete() {
    let bl = ByteLevel::new();
    let script = vec![
        bl.word("Hello"),
        bl.word(" EN"),
        bl.word("ough"),
        bl.word(" EN"),
        bl.eos(),
    ];
    let mut model = FakeModel::scripted(script, 300);
    let (out, deltas) = run(
        &mut model,
        &bl.tok,
        &[b'>'.into()],
        &greedy(&["END"], &[bl.eos()]),
    );
    assert_eq!(out.text, "Hello ENough EN");
    assert_eq!(deltas, ["Hello", " ", "ENough", " ", "EN"]);
    assert_eq!(out.finish_reason, FinishReason::Eos);
}

#[test]
fn earliest_of_several_stop_strings_wins_even_inside_one_token() {
    let mut s = StopStrings::new(&["OP".into(), "ST".into(), "zzz".into()]).unwrap();
    let push = s.push("xx STOP yy");
    assert!(push.stopped);
    assert_eq!(push.emit, "xx ");
    let mut s = StopStrings::new(&["é!".into()]).unwrap();
    assert_eq!(
        s.push("café").emit,
        "caf",
        "a stop string's first character is held"
    );
    let push = s.push("!");
    assert!(push.stopped);
    assert_eq!(push.emit, "");
}

#[test]
fn empty_stop_string_is_rejected() {
    let err = StopStrings::new(&["".into()]).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { name: "stop", .. }),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Loop: budget, context, prompt length, seeds

#[test]
fn max_tokens_ends_with_length() {
    let bl = ByteLevel::new();
    let mut model = FakeModel::scripted(b"abcdefgh".iter().map(|&b| b.into()).collect(), 300);
    let cfg = GenerationConfig {
        max_tokens: Some(3),
        ..greedy(&[], &[])
    };
    let (out, _) = run(&mut model, &bl.tok, &[1, 2], &cfg);
    assert_eq!(out.text, "abc");
    assert_eq!(out.finish_reason, FinishReason::Length);
    // One prefill call, then each token but the last fed back at the next position.
    let calls: Vec<(usize, usize)> = model.calls.iter().map(|(t, p)| (t.len(), *p)).collect();
    assert_eq!(calls, [(2, 0), (1, 2), (1, 3)]);
    assert_eq!(model.resets, 1);
    assert_eq!(out.prompt_tokens, 2);
}

#[test]
fn a_full_context_ends_with_length() {
    let bl = ByteLevel::new();
    let mut model = FakeModel::scripted(b"abcdefgh".iter().map(|&b| b.into()).collect(), 300);
    model.context = 8;
    let (out, _) = run(&mut model, &bl.tok, &[1, 2, 3, 4, 5], &greedy(&[], &[]));
    assert_eq!(
        out.text, "abc",
        "5 prompt + 3 generated tokens fill the context of 8"
    );
    assert_eq!(out.finish_reason, FinishReason::Length);
}

#[test]
fn prompt_longer_than_context_is_a_clear_error() {
    let bl = ByteLevel::new();
    let mut model = FakeModel::scripted(vec![b'a'.into()], 300);
    model.context = 8;
    let prompt: Vec<u32> = (1..=8).collect();
    let err = generate(&mut model, &bl.tok, &prompt, &greedy(&[], &[]), |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::InvalidArgument { name: "prompt", .. }),
        "{msg}"
    );
    assert!(
        msg.contains("8 tokens") && msg.contains("context of 8"),
        "{msg}"
    );
    assert!(model.calls.is_empty(), "the model is not run");
}

#[test]
fn truncate_prompt_keeps_the_last_tokens_and_leaves_room_for_max_tokens() {
    let bl = ByteLevel::new();
    let mut model = FakeModel::scripted(b"ab".iter().map(|&b| b.into()).collect(), 300);
    model.context = 8;
    let prompt: Vec<u32> = (1..=10).collect();
    let cfg = GenerationConfig {
        max_tokens: Some(2),
        truncate_prompt: true,
        ..greedy(&[], &[])
    };
    let (out, _) = run(&mut model, &bl.tok, &prompt, &cfg);
    assert_eq!(model.calls[0].0, (5..=10).collect::<Vec<u32>>());
    assert_eq!((out.prompt_tokens, out.truncated_tokens), (6, 4));
    assert_eq!(out.text, "ab");
}

#[test]
fn empty_prompt_is_rejected() {
    let bl = ByteLevel::new();
    let mut model = FakeModel::scripted(vec![], 300);
    let err = generate(&mut model, &bl.tok, &[], &greedy(&[], &[]), |_| {}).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { name: "prompt", .. }),
        "{err}"
    );
}

#[test]
fn bad_sampling_values_fail_before_the_model_runs() {
    let bl = ByteLevel::new();
    let mut model = FakeModel::scripted(vec![], 300);
    for (sampling, name) in [
        (
            SamplingParams {
                top_p: 1.5,
                ..Default::default()
            },
            "top_p",
        ),
        (
            SamplingParams {
                temperature: -0.5,
                ..Default::default()
            },
            "temperature",
        ),
    ] {
        let cfg = GenerationConfig {
            sampling,
            ..Default::default()
        };
        let err = generate(&mut model, &bl.tok, &[1], &cfg, |_| {}).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { name: n, .. } if n == name),
            "{err}"
        );
    }
    let cfg = GenerationConfig {
        max_tokens: Some(0),
        ..Default::default()
    };
    let err = generate(&mut model, &bl.tok, &[1], &cfg, |_| {}).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidArgument {
                name: "max_tokens",
                ..
            }
        ),
        "{err}"
    );
    assert!(model.calls.is_empty());
}

#[test]
fn same_seed_gives_the_same_text_and_another_seed_differs() {
    let bl = ByteLevel::new();
    let sample = |seed: u64| {
        let mut model = FakeModel::scripted(vec![], 256); // byte tokens only
        let cfg = GenerationConfig {
            sampling: SamplingParams {
                temperature: 0.8,
                top_k: 20,
                seed: Some(seed),
                ..Default::default()
            },
            max_tokens: Some(40),
            ..Default::default()
        };
        let (out, _) = run(&mut model, &bl.tok, &[b'>'.into()], &cfg);
        assert_eq!(out.seed, seed);
        out.token_ids
    };
    let a = sample(7);
    assert_eq!(a, sample(7));
    assert_ne!(a, sample(8));
    assert!(
        a.iter().collect::<std::collections::HashSet<_>>().len() > 5,
        "{a:?}"
    );
}

#[test]
fn random_seed_is_reported_and_replays() {
    let bl = ByteLevel::new();
    let mut cfg = GenerationConfig {
        sampling: SamplingParams::default(),
        max_tokens: Some(20),
        ..Default::default()
    };
    let mut model = FakeModel::scripted(vec![], 256);
    let (first, _) = run(&mut model, &bl.tok, &[1], &cfg);
    cfg.sampling.seed = Some(first.seed);
    let mut model = FakeModel::scripted(vec![], 256);
    let (again, _) = run(&mut model, &bl.tok, &[1], &cfg);
    assert_eq!(first.token_ids, again.token_ids);
}

#[test]
fn the_callback_can_cancel_generation() {
    let bl = ByteLevel::new();
    let mut model = FakeModel::scripted(b"abcdef".iter().map(|&b| b.into()).collect(), 300);
    let mut seen = Vec::new();
    let out = generate_until(&mut model, &bl.tok, &[1], &greedy(&[], &[]), |d| {
        seen.push(d.to_string());
        if seen.len() == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Cancelled);
    assert_eq!((out.text.as_str(), out.token_ids.len()), ("ab", 2));
    assert_eq!(model.calls.len(), 2, "no model call after the cancel");
}
