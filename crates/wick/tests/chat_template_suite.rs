//! Every chat template in llama.cpp's `models/templates/` (real templates of real models, fetched
//! by scripts/fetch-models.sh into models/llama.cpp/templates) rendered by wick equals
//! transformers' rendering (fixtures/chat_template_suite/gen.py, jinja2 3.1.6) for each fixed
//! conversation, with add_generation_prompt false and true: the same text, or an error where
//! Python raises one. A template wick cannot render is listed in UNSUPPORTED with the construct
//! its error must name; wick may not render any case of it differently from Python.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use wick::io::chat_template::{ChatTemplate, RenderOptions};

/// Templates wick cannot render, with the text its error must contain (naming the construct).
const UNSUPPORTED: &[(&str, &str)] = &[];

#[derive(Deserialize)]
struct Fixture {
    now_epoch_secs: i64,
    variables: serde_json::Map<String, serde_json::Value>,
    conversations: BTreeMap<String, Conversation>,
    templates: BTreeMap<String, TemplateCases>,
}

#[derive(Deserialize)]
struct Conversation {
    messages: Vec<serde_json::Value>,
    tools: Option<Vec<serde_json::Value>>,
    documents: Option<Vec<serde_json::Value>>,
    variables: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct TemplateCases {
    sha256: String,
    /// "<conversation>/gen" or "<conversation>/nogen" (add_generation_prompt true / false), in
    /// the order gen.py wrote them (a case's text may start like an earlier one's).
    cases: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Expected {
    Text(String),
    Shared {
        prefix_of: String,
        prefix_bytes: usize,
        rest: String,
    },
}

#[derive(Deserialize)]
struct Case {
    expected: Option<Expected>,
    error: Option<String>,
}

enum Outcome {
    Text(String),
    Raises(String),
}

/// The cases of one template with their full expected texts.
fn outcomes(cases: &serde_json::Map<String, serde_json::Value>) -> Vec<(String, Outcome)> {
    let mut out: Vec<(String, Outcome)> = Vec::new();
    for (name, case) in cases {
        let case: Case = serde_json::from_value(case.clone()).unwrap();
        let outcome = match (case.expected, case.error) {
            (Some(Expected::Text(text)), _) => Outcome::Text(text),
            (
                Some(Expected::Shared {
                    prefix_of,
                    prefix_bytes,
                    rest,
                }),
                _,
            ) => {
                let prev = out
                    .iter()
                    .find_map(|(n, o)| match o {
                        Outcome::Text(t) if *n == prefix_of => Some(t),
                        _ => None,
                    })
                    .unwrap_or_else(|| panic!("{name}: no earlier case {prefix_of}"));
                Outcome::Text(format!("{}{rest}", &prev[..prefix_bytes]))
            }
            (None, Some(error)) => Outcome::Raises(error),
            (None, None) => panic!("{name}: neither expected nor error"),
        };
        out.push((name.clone(), outcome));
    }
    out
}

/// Where `got` first differs from `want`, with some text of each around it.
fn first_difference(want: &str, got: &str) -> String {
    let at = want
        .char_indices()
        .zip(got.chars())
        .find(|((_, a), b)| a != b)
        .map(|((i, _), _)| i)
        .unwrap_or(want.len().min(got.len()));
    let around = |s: &str| {
        let mut start = at.saturating_sub(120);
        while !s.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (at + 120).min(s.len());
        while !s.is_char_boundary(end) {
            end += 1;
        }
        let (a, b) = s.split_at(at.min(s.len()));
        let _ = (a, b);
        format!(
            "{:?} ⟨HERE⟩ {:?}",
            &s[start..at.min(s.len())],
            &s[at.min(s.len())..end]
        )
    };
    format!(
        "first difference at byte {at} (python {} bytes, wick {} bytes)\n  python: {}\n  wick:   {}",
        want.len(),
        got.len(),
        around(want),
        around(got)
    )
}

#[test]
fn llama_cpp_templates_render_as_transformers_does() {
    let path = testkit::paths::fixture("chat_template_suite").join("expected.json");
    let fx: Fixture = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let dir = testkit::paths::real_model("llama.cpp").join("templates");
    if !dir.is_dir() {
        println!(
            "SKIPPED: {} is absent (scripts/fetch-models.sh fetches llama.cpp's templates)",
            dir.display()
        );
        return;
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".jinja"))
        .collect();
    on_disk.sort();
    let in_fixture: Vec<String> = fx.templates.keys().cloned().collect();
    assert_eq!(
        on_disk,
        in_fixture,
        "the templates in {} are not the ones gen.py rendered",
        dir.display()
    );
    for (name, _) in UNSUPPORTED {
        assert!(fx.templates.contains_key(*name), "UNSUPPORTED names {name}");
    }

    let mut failures = Vec::new();
    let mut matching_templates = 0;
    let mut matching_cases = 0;
    let mut clear_errors = 0;
    let mut both_raise = 0;
    let mut total_cases = 0;
    let mut unsupported_seen = BTreeMap::new();
    for (name, spec) in &fx.templates {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let sha = format!("{:x}", Sha256::digest(&bytes));
        assert_eq!(
            sha, spec.sha256,
            "{name} changed since gen.py rendered it: rerun fixtures/chat_template_suite/gen.py"
        );
        let source = String::from_utf8(bytes).unwrap();
        let unsupported = UNSUPPORTED.iter().find(|(n, _)| n == name).map(|(_, c)| *c);
        let template = match ChatTemplate::new(
            &source,
            fx.variables["bos_token"].as_str().map(String::from),
            fx.variables["eos_token"].as_str().map(String::from),
        ) {
            Ok(t) => t.with_fixed_time(fx.now_epoch_secs),
            Err(e) => {
                let text = e.to_string();
                total_cases += spec.cases.len();
                match unsupported {
                    Some(construct) if text.contains(construct) => {
                        clear_errors += spec.cases.len();
                        unsupported_seen.insert(name.clone(), text);
                    }
                    _ => failures.push(format!("{name}: does not compile: {text}")),
                }
                continue;
            }
        };
        let mut all_match = true;
        for (case_name, outcome) in outcomes(&spec.cases) {
            total_cases += 1;
            let (conversation, gen) = case_name.rsplit_once('/').unwrap();
            let conv = &fx.conversations[conversation];
            let mut variables = fx.variables.clone();
            variables.extend(conv.variables.clone());
            let options = RenderOptions {
                add_generation_prompt: gen == "gen",
                tools: conv.tools.clone(),
                documents: conv.documents.clone(),
                variables,
            };
            let got = template.render_with(&conv.messages, &options);
            let what = format!("{name} × {case_name}");
            match (outcome, got) {
                (Outcome::Text(want), Ok(got)) if want == got => matching_cases += 1,
                (Outcome::Raises(_), Err(_)) => {
                    matching_cases += 1;
                    both_raise += 1;
                }
                (Outcome::Text(want), Ok(got)) => {
                    all_match = false;
                    failures.push(format!("{what}: {}", first_difference(&want, &got)));
                }
                (Outcome::Text(_), Err(e)) => {
                    all_match = false;
                    let text = e.to_string();
                    match unsupported {
                        Some(construct) if text.contains(construct) => {
                            clear_errors += 1;
                            unsupported_seen.insert(name.clone(), text);
                        }
                        _ => failures.push(format!("{what}: python renders it, wick: {text}")),
                    }
                }
                (Outcome::Raises(error), Ok(got)) => {
                    all_match = false;
                    failures.push(format!(
                        "{what}: python raises {error:?}, wick renders {} bytes: {:?}",
                        got.len(),
                        &got[..got.len().min(300)]
                    ));
                }
            }
        }
        if all_match {
            matching_templates += 1;
        }
    }
    println!(
        "chat template suite: {total_cases} cases ({} templates x {} conversations x \
         add_generation_prompt false/true): {matching_cases} exact matches ({} equal texts, \
         {both_raise} raised by both), {clear_errors} clear errors, {} mismatches; \
         {matching_templates} templates match on every case",
        fx.templates.len(),
        fx.conversations.len(),
        matching_cases - both_raise,
        total_cases - matching_cases - clear_errors
    );
    for (name, error) in &unsupported_seen {
        println!("known unsupported: {name}: {error}");
    }
    for (name, construct) in UNSUPPORTED {
        if !unsupported_seen.contains_key(*name) {
            failures.push(format!(
                "{name} is listed as unsupported ({construct}) but never failed that way: \
                 remove it from UNSUPPORTED"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
