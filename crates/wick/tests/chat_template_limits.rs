//! Hostile chat templates (a model file's `chat_template` is untrusted input): endless loops,
//! huge outputs, memory blow-ups and deep recursion end in one clear error instead of a hang, an
//! OOM or a stack overflow, while real conversations, long ones too, still render.
//!
//! Each render runs on a thread with a 2 MiB stack, the smallest a caller gives it (Rust's and
//! tokio's default), as the fuzz target does.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use wick::io::chat_template::{ChatMessage, ChatTemplate};
use wick::Error;

fn render_on_small_stack(template: &str, messages: Vec<ChatMessage>) -> wick::Result<String> {
    let template = template.to_string();
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || ChatTemplate::new(&template, None, None)?.render(&messages, true))
        .unwrap()
        .join()
        .unwrap()
}

fn chat() -> Vec<ChatMessage> {
    vec![
        ChatMessage::system("You are terse."),
        ChatMessage::user("What is the capital of France?"),
    ]
}

/// The error a template that does too much work gets: one line, naming the budget.
fn assert_budget_error(result: wick::Result<String>, what: &str) {
    match result {
        Err(
            e @ Error::InvalidArgument {
                name: "chat_template",
                ..
            },
        ) => {
            let text = e.to_string();
            assert!(
                text.contains("work budget") && !text.contains('\n'),
                "{what}: unclear error: {text}"
            );
        }
        Err(other) => panic!("{what}: expected a budget error, got: {other}"),
        Ok(out) => panic!("{what}: rendered {} bytes instead of stopping", out.len()),
    }
}

#[test]
fn a_loop_of_ten_billion_steps_stops_with_a_clear_error() {
    let template =
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
    assert_budget_error(render_on_small_stack(template, chat()), "nested loops");
}

#[test]
fn doubling_a_string_stops_before_it_fills_memory() {
    // 28 doublings: 256 MiB, far past anything a conversation of a few bytes needs.
    let template = "{% set ns = namespace(s='x') %}{% for i in range(28) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}";
    assert_budget_error(render_on_small_stack(template, chat()), "string doubling");
}

#[test]
fn a_huge_output_stops_with_a_clear_error() {
    let template = "{% for i in range(100000) %}{{ 'x' * 10000 }}{% endfor %}";
    assert_budget_error(render_on_small_stack(template, chat()), "1 GB of output");
}

#[test]
fn tojson_with_a_huge_indent_stops_with_a_clear_error() {
    // Each newline of the JSON is followed by indent x depth spaces: ~ 500 MB here.
    let template = "{{ messages|tojson(indent=50000000) }}";
    assert_budget_error(render_on_small_stack(template, chat()), "tojson indent");
}

#[test]
fn endless_macro_recursion_is_an_error_not_a_stack_overflow() {
    let template = "{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}";
    let err = render_on_small_stack(template, chat()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("chat_template") && !text.contains('\n'),
        "unclear error: {text}"
    );
}

#[test]
fn deeply_nested_expressions_are_a_syntax_error_not_a_stack_overflow() {
    let template = format!("{{{{ {}1{} }}}}", "(".repeat(5000), ")".repeat(5000));
    let err = render_on_small_stack(&template, chat()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidArgument {
                name: "chat_template",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_long_real_conversation_still_renders() {
    // SmolLM2's template (fixtures/chat_templates) on 2000 turns of 1 KiB each: the budget grows
    // with the messages, so long real inputs are never cut off.
    let template = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    let turn = "word ".repeat(200);
    let messages: Vec<ChatMessage> = (0..2000)
        .map(|i| {
            if i % 2 == 0 {
                ChatMessage::user(turn.clone())
            } else {
                ChatMessage::assistant(turn.clone())
            }
        })
        .collect();
    let out = render_on_small_stack(template, messages).unwrap();
    assert_eq!(out.matches("<|im_start|>").count(), 2000 + 2);
    assert!(out.len() > 2000 * turn.len(), "{} bytes", out.len());
}
