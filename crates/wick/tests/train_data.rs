//! Training data: JSONL shapes and line-numbered errors, prompt/assistant masking with the real
//! SmolLM2 tokenizer and chat template, the length limit, splits and length-sorted batches.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use std::path::{Path, PathBuf};

use testkit::paths::real_model;
use wick::io::chat_template::ChatTemplate;
use wick::io::gguf::GgufFile;
use wick::io::gguf_tokenizer::{special_tokens, tokenizer_from_gguf};
use wick::tokenizers::Tokenizer;
use wick::train::data::{read_jsonl_with, split, DataOptions};
use wick::train::loss::IGNORE_INDEX;
use wick::train::{
    epoch_order, length_sorted_batches, read_jsonl, tokenize, Overflow, Record, TokenizeOptions,
};

struct Smol {
    tokenizer: Tokenizer,
    template: ChatTemplate,
    eos: u32,
}

fn smol() -> Smol {
    let path = real_model("SmolLM2-135M-Instruct").join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let file = GgufFile::open(&path).unwrap();
    let tokenizer = tokenizer_from_gguf(&file).unwrap();
    let special = special_tokens(&file).unwrap();
    let text = |id: Option<u32>| id.and_then(|i| tokenizer.id_to_token(i));
    let template = ChatTemplate::new(
        file.chat_template().unwrap().unwrap(),
        text(special.bos),
        text(special.eos),
    )
    .unwrap();
    Smol {
        eos: special.eos.unwrap(),
        tokenizer,
        template,
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn read_err(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    read_jsonl(&write(dir.path(), "train.jsonl", text))
        .unwrap_err()
        .to_string()
}

fn opts(max_length: usize, overflow: Overflow, eos: u32) -> TokenizeOptions {
    TokenizeOptions {
        max_length,
        overflow,
        train_on_all: false,
        eos_token_id: Some(eos),
    }
}

#[test]
fn malformed_json_names_the_line() {
    let err = read_err("{\"text\": \"a\"}\n\n{\"text\": oops}\n");
    assert!(err.contains("train.jsonl:3: invalid JSON"), "{err}");
}

#[test]
fn missing_and_mistyped_fields_name_the_line_and_field() {
    let err = read_err("{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"q\"}\n");
    assert!(
        err.ends_with("train.jsonl:2: missing field \"completion\""),
        "{err}"
    );
    let err = read_err("{\"text\": 3}\n");
    assert!(
        err.contains("train.jsonl:1: field \"text\" is not a string"),
        "{err}"
    );
    let err = read_err("{\"messages\": [{\"role\": \"user\"}]}\n");
    assert!(
        err.contains("train.jsonl:1: messages[0]: missing field \"content\""),
        "{err}"
    );
    let err = read_err("{\"messages\": \"hi\"}\n");
    assert!(
        err.contains("train.jsonl:1: field \"messages\" is not an array"),
        "{err}"
    );
    let err = read_err("[1, 2]\n");
    assert!(
        err.contains("train.jsonl:1: expected a JSON object"),
        "{err}"
    );
    let err = read_err("{\"input\": \"x\"}\n");
    assert!(err.contains("train.jsonl:1: expected {\"text\"}"), "{err}");
}

#[test]
fn unknown_roles_are_rejected_naming_the_line_and_role() {
    let err = read_err(
        "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"bot\", \"content\": \"b\"}]}\n",
    );
    assert!(
        err.contains(
            "train.jsonl:1: messages[1]: role \"bot\" is not supported (supported: system, developer, user, assistant)"
        ),
        "{err}"
    );
    let err = read_err("{\"messages\": [{\"role\": \"tool\", \"content\": \"{}\"}]}\n");
    assert!(err.contains("messages[0]: role \"tool\""), "{err}");
    let err = read_err("{\"messages\": [{\"role\": 1, \"content\": \"a\"}]}\n");
    assert!(
        err.contains("messages[0]: field \"role\" is not a string"),
        "{err}"
    );
    // OpenAI's `developer` is the system role, as the server reads it.
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "train.jsonl",
        "{\"messages\": [{\"role\": \"developer\", \"content\": \"be terse\"}, {\"role\": \"user\", \"content\": \"a\"}]}\n",
    );
    let data = read_jsonl(&path).unwrap();
    let Record::Messages(m) = &data.records[0].1 else {
        panic!("{:?}", data.records[0])
    };
    assert_eq!(m[0].role, "system");
}

#[test]
fn unknown_fields_are_rejected_naming_the_line_and_field() {
    let err = read_err("{\"promt\": \"a\", \"completion\": \"b\"}\n");
    assert!(
        err.contains("train.jsonl:1: unknown field \"promt\""),
        "{err}"
    );
    let err = read_err("{\"text\": \"a\"}\n{\"text\": \"b\", \"source\": \"web\"}\n");
    assert!(
        err.contains("train.jsonl:2: unknown field \"source\"") && err.contains("{\"text\"}"),
        "{err}"
    );
    let err = read_err("{\"prompt\": \"a\", \"completion\": \"b\", \"text\": \"c\"}\n");
    assert!(
        err.contains("train.jsonl:1: unknown field \"text\""),
        "{err}"
    );
    let err =
        read_err("{\"messages\": [{\"role\": \"user\", \"content\": \"a\", \"weight\": 0}]}\n");
    assert!(
        err.contains("train.jsonl:1: messages[0]: unknown field \"weight\""),
        "{err}"
    );
}

#[test]
fn fields_named_to_ignore_are_let_through_and_others_still_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DataOptions {
        ignore_fields: vec!["id".into(), "name".into()],
    };
    let path = write(
        dir.path(),
        "train.jsonl",
        "{\"id\": 1, \"messages\": [{\"role\": \"user\", \"name\": \"ann\", \"content\": \"a\"}]}\n",
    );
    let data = read_jsonl_with(&path, &opts).unwrap();
    assert_eq!(data.records.len(), 1);
    let path = write(
        dir.path(),
        "typo.jsonl",
        "{\"id\": 1, \"text\": \"a\", \"lang\": \"en\"}\n",
    );
    let err = read_jsonl_with(&path, &opts).unwrap_err().to_string();
    assert!(
        err.contains("typo.jsonl:1: unknown field \"lang\""),
        "{err}"
    );
    let path = write(dir.path(), "none.jsonl", "{\"id\": 1, \"txt\": \"a\"}\n");
    let err = read_jsonl_with(&path, &opts).unwrap_err().to_string();
    assert!(err.ends_with("found keys [\"txt\"]"), "{err}");
}

#[test]
fn mixing_shapes_is_an_error_naming_both_lines() {
    let err = read_err(
        "{\"text\": \"a\"}\n{\"text\": \"b\"}\n{\"prompt\": \"q\", \"completion\": \"a\"}\n",
    );
    assert!(
        err.contains(
            "train.jsonl:3: shape {\"prompt\",\"completion\"} differs from line 1's {\"text\"}"
        ),
        "{err}"
    );
}

#[test]
fn empty_dataset_is_an_error() {
    let err = read_err("");
    assert!(err.contains("train.jsonl: the dataset is empty"), "{err}");
    let err = read_err("\n   \n\n");
    assert!(err.contains("the dataset is empty"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let err = read_jsonl(&dir.path().join("absent.jsonl"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.jsonl: file not found"), "{err}");
}

#[test]
fn prompt_is_masked_and_completion_trained_with_eos() {
    let s = smol();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "train.jsonl",
        "{\"prompt\": \"The capital of France is\", \"completion\": \" Paris.\"}\n",
    );
    let data = read_jsonl(&path).unwrap();
    let (ex, report) = tokenize(
        &data,
        &s.tokenizer,
        None,
        &opts(64, Overflow::Truncate, s.eos),
    )
    .unwrap();
    let ex = &ex[0];
    let trained: Vec<u32> = ex
        .input_ids
        .iter()
        .zip(&ex.trained)
        .filter(|(_, &t)| t)
        .map(|(&i, _)| i)
        .collect();
    assert_eq!(
        s.tokenizer.decode(&trained, false).unwrap(),
        " Paris.<|im_end|>"
    );
    assert_eq!(*ex.input_ids.last().unwrap(), s.eos);
    let prompt = s
        .tokenizer
        .encode("The capital of France is", true)
        .unwrap();
    assert_eq!(&ex.input_ids[..prompt.len()], prompt.get_ids());
    assert!(ex.trained[..prompt.len()].iter().all(|&t| !t));
    assert_eq!(report.trained_tokens, trained.len());
    assert_eq!(ex.line, 1);
}

#[test]
fn only_assistant_turns_are_trained_in_conversations() {
    let s = smol();
    let dir = tempfile::tempdir().unwrap();
    let line = r#"{"messages": [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And Italy?"}, {"role": "assistant", "content": "Rome."}]}"#;
    let data = read_jsonl(&write(dir.path(), "chat.jsonl", &format!("{line}\n"))).unwrap();
    let (ex, _) = tokenize(
        &data,
        &s.tokenizer,
        Some(&s.template),
        &opts(512, Overflow::Truncate, s.eos),
    )
    .unwrap();
    let ex = &ex[0];
    let Record::Messages(messages) = &data.records[0].1 else {
        panic!()
    };
    let full = s.template.render(messages, false).unwrap();
    assert_eq!(s.tokenizer.decode(&ex.input_ids, false).unwrap(), full);
    // Contiguous trained spans, decoded.
    let mut spans = Vec::new();
    let mut current = Vec::new();
    for (&id, &t) in ex.input_ids.iter().zip(&ex.trained) {
        if t {
            current.push(id);
        } else if !current.is_empty() {
            spans.push(
                s.tokenizer
                    .decode(&std::mem::take(&mut current), false)
                    .unwrap(),
            );
        }
    }
    if !current.is_empty() {
        spans.push(s.tokenizer.decode(&current, false).unwrap());
    }
    assert_eq!(spans, ["Paris.<|im_end|>\n", "Rome.<|im_end|>\n"]);

    let all = TokenizeOptions {
        train_on_all: true,
        ..opts(512, Overflow::Truncate, s.eos)
    };
    let (ex, _) = tokenize(&data, &s.tokenizer, Some(&s.template), &all).unwrap();
    assert!(ex[0].trained.iter().all(|&t| t));
}

#[test]
fn messages_without_a_chat_template_are_an_error() {
    let s = smol();
    let dir = tempfile::tempdir().unwrap();
    let line = r#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}"#;
    let data = read_jsonl(&write(dir.path(), "chat.jsonl", &format!("{line}\n"))).unwrap();
    let err = tokenize(
        &data,
        &s.tokenizer,
        None,
        &opts(64, Overflow::Truncate, s.eos),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("chat.jsonl:1: \"messages\" need a chat template"),
        "{err}"
    );
}

#[test]
fn long_examples_are_truncated_or_skipped_and_counted() {
    let s = smol();
    let dir = tempfile::tempdir().unwrap();
    let long = "word ".repeat(40);
    let text = format!(
        "{{\"prompt\": \"Q:\", \"completion\": \"{long}\"}}\n{{\"prompt\": \"Q:\", \"completion\": \" short\"}}\n{{\"prompt\": \"{long}\", \"completion\": \" x\"}}\n"
    );
    let data = read_jsonl(&write(dir.path(), "train.jsonl", &text)).unwrap();

    let (ex, report) = tokenize(
        &data,
        &s.tokenizer,
        None,
        &opts(16, Overflow::Truncate, s.eos),
    )
    .unwrap();
    // Line 1 is cut to 16 tokens; line 3 loses its completion to the cut and has nothing left.
    assert_eq!(
        (
            report.truncated,
            report.skipped_long,
            report.skipped_untrained
        ),
        (2, 0, 1)
    );
    assert_eq!(ex.iter().map(|e| e.line).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(ex[0].input_ids.len(), 16);

    let (ex, report) =
        tokenize(&data, &s.tokenizer, None, &opts(16, Overflow::Skip, s.eos)).unwrap();
    assert_eq!(
        (report.truncated, report.skipped_long, report.examples),
        (0, 2, 1)
    );
    assert_eq!(ex[0].line, 2);
    assert!(
        report.to_string().contains("2 skipped as too long"),
        "{report}"
    );

    let err = tokenize(&data, &s.tokenizer, None, &opts(2, Overflow::Skip, s.eos))
        .unwrap_err()
        .to_string();
    assert!(err.contains("train.jsonl: no usable examples"), "{err}");
    assert!(err.contains("3 skipped as too long"), "{err}");
}

#[test]
fn validation_split_is_deterministic_and_disjoint() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..20)
        .map(|i| format!("{{\"text\": \"example {i}\"}}\n"))
        .collect();
    let path = write(dir.path(), "train.jsonl", &text);
    let (t1, v1) = split(read_jsonl(&path).unwrap(), 0.2, 3).unwrap();
    let (t2, v2) = split(read_jsonl(&path).unwrap(), 0.2, 3).unwrap();
    assert_eq!((t1.records.len(), v1.records.len()), (16, 4));
    assert_eq!(v1.records, v2.records);
    assert_eq!(t1.records, t2.records);
    assert!(v1.records.iter().all(|v| !t1.records.contains(v)));
    let err = split(read_jsonl(&path).unwrap(), 0.01, 3)
        .unwrap_err()
        .to_string();
    assert!(err.contains("too few"), "{err}");
}

#[test]
fn batches_are_length_sorted_padded_and_visited_in_a_seeded_order() {
    let s = smol();
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..7)
        .map(|i| {
            format!(
                "{{\"prompt\": \"Q{i}:\", \"completion\": \"{}\"}}\n",
                " a".repeat(1 + (i * 5) % 7)
            )
        })
        .collect();
    let data = read_jsonl(&write(dir.path(), "train.jsonl", &text)).unwrap();
    let (ex, _) = tokenize(
        &data,
        &s.tokenizer,
        None,
        &opts(64, Overflow::Truncate, s.eos),
    )
    .unwrap();
    let batches = length_sorted_batches(&ex, 3, 0);
    assert_eq!(
        batches.iter().map(|b| b.rows).collect::<Vec<_>>(),
        [3, 3, 1]
    );
    let widths: Vec<usize> = batches.iter().map(|b| b.cols).collect();
    assert!(widths.windows(2).all(|w| w[0] <= w[1]), "{widths:?}");
    for b in &batches {
        for (i, &m) in b.attention_mask.iter().enumerate() {
            if m == 0 {
                assert_eq!(b.labels[i], IGNORE_INDEX, "padding is never a target");
            }
        }
    }
    let total: usize = batches.iter().map(|b| b.target_count()).sum();
    assert_eq!(total, ex.iter().map(|e| e.target_count()).sum::<usize>());

    assert_eq!(epoch_order(10, 5, 0, true), epoch_order(10, 5, 0, true));
    assert_ne!(epoch_order(10, 5, 0, true), epoch_order(10, 5, 1, true));
    assert_ne!(epoch_order(10, 5, 0, true), epoch_order(10, 6, 0, true));
    assert_eq!(epoch_order(4, 5, 3, false), [0, 1, 2, 3]);
}
