//! Chat templates rendered with minijinja against transformers' renderings
//! (fixtures/chat_templates/gen.py): SmolLM2's template from its GGUF, Llama 3 and Qwen2.5 style
//! templates, a workout of the jinja features HF templates use, and one that raises.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use serde::Deserialize;
use wick::io::chat_template::{strftime, ChatMessage, ChatTemplate};
use wick::Error;

#[derive(Deserialize)]
struct Fixture {
    templates: std::collections::BTreeMap<String, TemplateSpec>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct TemplateSpec {
    template: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

#[derive(Deserialize)]
struct Case {
    template: String,
    messages: Vec<ChatMessage>,
    add_generation_prompt: bool,
    expected: Option<String>,
    error: Option<String>,
}

fn fixture() -> Fixture {
    let path = testkit::paths::fixture("chat_templates").join("cases.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn compile(spec: &TemplateSpec) -> ChatTemplate {
    ChatTemplate::new(
        &spec.template,
        spec.bos_token.clone(),
        spec.eos_token.clone(),
    )
    .unwrap()
}

#[test]
fn renderings_match_transformers() {
    let fx = fixture();
    let mut checked = 0;
    for (i, case) in fx.cases.iter().enumerate() {
        let tpl = compile(&fx.templates[&case.template]);
        let got = tpl.render(&case.messages, case.add_generation_prompt);
        let what = format!(
            "case {i} ({}, add_generation_prompt={})",
            case.template, case.add_generation_prompt
        );
        match (&case.expected, &case.error) {
            (Some(expected), _) => {
                let got = got.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(&got, expected, "{what}");
            }
            (None, Some(raised)) => {
                let err = got.expect_err(&what);
                assert!(
                    matches!(
                        err,
                        Error::InvalidArgument {
                            name: "messages",
                            ..
                        }
                    ),
                    "{what}: {err}"
                );
                assert!(err.to_string().contains(raised.as_str()), "{what}: {err}");
            }
            (None, None) => panic!("{what}: fixture has neither expected nor error"),
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} cases");
    for name in ["smollm2", "llama3", "qwen2.5", "workout", "alternating"] {
        assert!(
            fx.cases.iter().any(|c| c.template == name),
            "{name} untested"
        );
    }
}

#[test]
fn smollm2_system_and_user_with_generation_prompt() {
    let fx = fixture();
    let tpl = compile(&fx.templates["smollm2"]);
    let messages = [
        ChatMessage::system("You are a concise assistant."),
        ChatMessage::user("What is the capital of France?"),
    ];
    assert_eq!(
        tpl.render(&messages, true).unwrap(),
        "<|im_start|>system\nYou are a concise assistant.<|im_end|>\n\
         <|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn fixture_template_is_the_one_in_the_gguf() {
    use wick::candle_core::quantized::gguf_file;
    let path =
        testkit::paths::real_model("SmolLM2-135M-Instruct").join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut file = std::fs::File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let template = content.metadata["tokenizer.chat_template"]
        .to_string()
        .unwrap()
        .clone();
    assert_eq!(template, fixture().templates["smollm2"].template);
}

#[test]
fn syntax_errors_are_reported_at_compile_time() {
    let err = ChatTemplate::new("{% for m in messages %}{{ m.content }}", None, None).unwrap_err();
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
    assert!(err.to_string().contains("syntax error"), "{err}");
}

#[test]
fn raise_exception_becomes_a_clear_error_about_the_messages() {
    let tpl = ChatTemplate::new(
        "{% if messages[0].role != 'user' %}{{ raise_exception('First message must be from the user') }}{% endif %}ok",
        None,
        None,
    )
    .unwrap();
    assert_eq!(tpl.render(&[ChatMessage::user("hi")], false).unwrap(), "ok");
    let err = tpl
        .render(&[ChatMessage::assistant("hi")], false)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid argument `messages`: the chat template rejected them: First message must be \
         from the user"
    );
}

#[test]
fn other_render_failures_name_the_template() {
    let tpl = ChatTemplate::new("{{ messages[0].content.nosuchmethod() }}", None, None).unwrap();
    let err = tpl.render(&[ChatMessage::user("hi")], false).unwrap_err();
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
fn strftime_now_formats_dates_as_python_does() {
    // 2024-07-26 13:25:09 UTC, a Friday.
    let t = 1_722_000_309;
    assert_eq!(strftime("%d %b %Y", t), "26 Jul 2024");
    assert_eq!(
        strftime("%A %B %-d, %y %H:%M:%S %%", t),
        "Friday July 26, 24 13:25:09 %"
    );
    assert_eq!(strftime("%Y-%m-%d", 0), "1970-01-01");
    assert_eq!(strftime("%Y-%m-%d", 951_782_400), "2000-02-29");
    let tpl = ChatTemplate::new("{{ strftime_now('%Y') | length }}", None, None).unwrap();
    assert_eq!(tpl.render(&[], false).unwrap(), "4");
}
