//! Tokenizing records into training examples with a per-token "trained" mask, and applying the
//! length limit.
//!
//! Masks follow TRL's conventions: a prompt/completion pair trains the completion (the tokens
//! after the longest common prefix of the prompt's and the whole text's tokens); a conversation
//! trains each assistant turn, found by rendering the conversation prefix by prefix (the span
//! between "everything before, with the generation prompt" and "everything up to this turn").
//! Plain text and prompt/completion pairs get the EOS token appended (when there is one and the
//! tokenizer did not add it); chat templates write their own end-of-turn tokens.

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::io::chat_template::{ChatMessage, ChatTemplate};
use crate::train::data::{JsonlData, Record};

/// What to do with an example longer than the length limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Keep its first `max_length` tokens.
    Truncate,
    /// Leave it out.
    Skip,
}

#[derive(Debug, Clone)]
pub struct TokenizeOptions {
    pub max_length: usize,
    pub overflow: Overflow,
    /// Train on every token (prompts and user turns too), not only completions / assistant turns.
    pub train_on_all: bool,
    pub eos_token_id: Option<u32>,
}

/// One tokenized example; `trained[i]` says whether token `i` is a target of the loss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub input_ids: Vec<u32>,
    pub trained: Vec<bool>,
    /// 1-based line in the data file.
    pub line: usize,
}

impl Example {
    /// Tokens the loss counts (the first token is never a target: labels are shifted).
    pub fn target_count(&self) -> usize {
        self.trained.iter().skip(1).filter(|&&t| t).count()
    }
}

/// What tokenizing a file did, for the user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataReport {
    pub records: usize,
    pub examples: usize,
    pub truncated: usize,
    pub skipped_long: usize,
    /// Examples left with no trained token (e.g. no assistant turn, or truncated before it).
    pub skipped_untrained: usize,
    pub tokens: usize,
    pub trained_tokens: usize,
}

impl std::fmt::Display for DataReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} examples ({} tokens, {} trained) from {} records; {} truncated, {} skipped as too long, {} skipped with nothing to train",
            self.examples,
            self.tokens,
            self.trained_tokens,
            self.records,
            self.truncated,
            self.skipped_long,
            self.skipped_untrained
        )
    }
}

/// Tokenizes every record of `data`; an empty result is an error naming the file.
pub fn tokenize(
    data: &JsonlData,
    tokenizer: &Tokenizer,
    template: Option<&ChatTemplate>,
    opts: &TokenizeOptions,
) -> Result<(Vec<Example>, DataReport)> {
    if opts.max_length < 2 {
        return Err(Error::InvalidArgument {
            name: "max_length",
            message: format!("{} is too small (at least 2 tokens)", opts.max_length),
        });
    }
    // Our own limit applies, not whatever truncation or padding the tokenizer file carries.
    let mut tok = tokenizer.clone();
    tok.with_padding(None);
    tok.with_truncation(None)
        .map_err(|e| Error::Tokenize(e.to_string()))?;
    let mut report = DataReport {
        records: data.records.len(),
        ..Default::default()
    };
    let mut examples = Vec::new();
    for (line, record) in &data.records {
        let at = |e: Error| Error::bad_data(&data.path, Some(*line), e.to_string());
        let (mut ids, mut trained) = match record {
            Record::Text(text) => {
                let mut ids = encode(&tok, text, true).map_err(at)?;
                push_eos(&mut ids, opts.eos_token_id);
                let n = ids.len();
                (ids, vec![true; n])
            }
            Record::PromptCompletion { prompt, completion } => {
                let prompt_ids = encode(&tok, prompt, true).map_err(at)?;
                let mut ids = encode(&tok, &format!("{prompt}{completion}"), true).map_err(at)?;
                push_eos(&mut ids, opts.eos_token_id);
                let boundary = common_prefix(&prompt_ids, &ids);
                let trained = (0..ids.len()).map(|i| i >= boundary).collect();
                (ids, trained)
            }
            Record::Messages(messages) => {
                let template = template.ok_or_else(|| {
                    Error::bad_data(
                        &data.path,
                        Some(*line),
                        "\"messages\" need a chat template and the model has none",
                    )
                })?;
                conversation(&tok, template, messages).map_err(at)?
            }
        };
        if opts.train_on_all {
            trained.iter_mut().for_each(|t| *t = true);
        }
        if ids.len() > opts.max_length {
            match opts.overflow {
                Overflow::Skip => {
                    report.skipped_long += 1;
                    continue;
                }
                Overflow::Truncate => {
                    ids.truncate(opts.max_length);
                    trained.truncate(opts.max_length);
                    report.truncated += 1;
                }
            }
        }
        let example = Example {
            input_ids: ids,
            trained,
            line: *line,
        };
        let targets = example.target_count();
        if targets == 0 {
            report.skipped_untrained += 1;
            continue;
        }
        report.tokens += example.input_ids.len();
        report.trained_tokens += targets;
        examples.push(example);
    }
    report.examples = examples.len();
    if examples.is_empty() {
        return Err(Error::bad_data(
            &data.path,
            None,
            format!("no usable examples: {report}"),
        ));
    }
    Ok((examples, report))
}

fn encode(tok: &Tokenizer, text: &str, add_special: bool) -> Result<Vec<u32>> {
    Ok(tok
        .encode(text, add_special)
        .map_err(|e| Error::Tokenize(e.to_string()))?
        .get_ids()
        .to_vec())
}

fn push_eos(ids: &mut Vec<u32>, eos: Option<u32>) {
    if let Some(eos) = eos {
        if ids.last() != Some(&eos) {
            ids.push(eos);
        }
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Token ids of the whole rendered conversation and which of them belong to assistant turns.
fn conversation(
    tok: &Tokenizer,
    template: &ChatTemplate,
    messages: &[ChatMessage],
) -> Result<(Vec<u32>, Vec<bool>)> {
    let ids = encode(tok, &template.render(messages, false)?, false)?;
    let mut trained = vec![false; ids.len()];
    for (i, m) in messages.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let start = match i {
            0 => 0,
            _ => common_prefix(
                &encode(tok, &template.render(&messages[..i], true)?, false)?,
                &ids,
            ),
        };
        let end = common_prefix(
            &encode(tok, &template.render(&messages[..=i], false)?, false)?,
            &ids,
        );
        for t in trained.iter_mut().take(end).skip(start) {
            *t = true;
        }
    }
    Ok((ids, trained))
}
