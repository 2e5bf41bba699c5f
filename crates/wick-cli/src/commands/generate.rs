//! `wick generate`: one completion streamed to stdout, statistics to stderr. Also holds what
//! `wick chat` shares with it: the sampling flags, model loading and the streaming call.

use std::io::{IsTerminal, Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use wick::generate::load::load_causal_lm;
use wick::generate::{
    generate_until, GenerationConfig, GenerationDefaults, GenerationOutput, LanguageModel,
    SamplingParams,
};
use wick::io::chat_template::{ChatMessage, ChatTemplate};
use wick::io::ModelFiles;
use wick::tokenizers::Tokenizer;

use crate::args::ModelArgs;

/// Sampling and stopping flags shared by `generate` and `chat`. Unset sampling flags fall back to
/// the model's generation_config.json (greedy when it has none, as in transformers).
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Softmax temperature; 0 is greedy decoding.
    #[arg(long, allow_negative_numbers = true)]
    pub temperature: Option<f32>,
    /// Keep only the K most likely tokens (0 = off).
    #[arg(long, allow_negative_numbers = true)]
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass, in (0, 1].
    #[arg(long, allow_negative_numbers = true)]
    pub top_p: Option<f32>,
    /// Drop tokens less likely than this fraction of the most likely one, in [0, 1].
    #[arg(long, allow_negative_numbers = true)]
    pub min_p: Option<f32>,
    /// Repetition penalty on prompt and generated tokens (> 0; 1 = off).
    #[arg(long, alias = "repetition-penalty", allow_negative_numbers = true)]
    pub repeat_penalty: Option<f32>,
    /// Subtract count × this from generated tokens' logits, in [-2, 2].
    #[arg(long, allow_negative_numbers = true)]
    pub frequency_penalty: Option<f32>,
    /// Subtract this once from every generated token's logit, in [-2, 2].
    #[arg(long, allow_negative_numbers = true)]
    pub presence_penalty: Option<f32>,
    /// Add BIAS to token ID's logit (repeatable; -inf bans the token).
    #[arg(long, value_name = "ID=BIAS", allow_negative_numbers = true)]
    pub logit_bias: Vec<String>,
    /// Seed for reproducible sampling (a random one is printed on stderr otherwise).
    #[arg(long, allow_negative_numbers = true, value_parser = crate::args::parse_seed)]
    pub seed: Option<u64>,
    /// Most tokens to generate (per reply in chat).
    #[arg(long, default_value_t = 512, allow_negative_numbers = true)]
    pub max_tokens: usize,
    /// Stop when this text appears; it is not printed (repeatable).
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Keep the end of a prompt too long for the context instead of failing.
    #[arg(long)]
    pub truncate_prompt: bool,
}

impl SamplingArgs {
    /// The flags over `base` (the model's defaults), not yet validated.
    fn params(&self, base: SamplingParams) -> Result<SamplingParams> {
        let mut logit_bias = Vec::new();
        for spec in &self.logit_bias {
            logit_bias.push(
                parse_bias(spec).map_err(|message| wick::Error::InvalidArgument {
                    name: "logit_bias",
                    message,
                })?,
            );
        }
        Ok(SamplingParams {
            temperature: self.temperature.unwrap_or(base.temperature),
            top_k: self.top_k.unwrap_or(base.top_k),
            top_p: self.top_p.unwrap_or(base.top_p),
            min_p: self.min_p.unwrap_or(base.min_p),
            repetition_penalty: self.repeat_penalty.unwrap_or(base.repetition_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(base.frequency_penalty),
            presence_penalty: self.presence_penalty.unwrap_or(base.presence_penalty),
            logit_bias: [base.logit_bias, logit_bias].concat(),
            seed: self.seed.or(base.seed),
        })
    }

    /// The full configuration for a model with these defaults, validated.
    pub fn config(&self, defaults: &GenerationDefaults) -> Result<GenerationConfig> {
        let config = GenerationConfig {
            sampling: self.params(defaults.sampling_params())?,
            max_tokens: Some(self.max_tokens),
            stop: self.stop.clone(),
            eos_token_ids: defaults.eos_token_id.clone(),
            truncate_prompt: self.truncate_prompt,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the flags on their own, before any model is loaded.
    pub fn check(&self) -> Result<()> {
        self.config(&GenerationDefaults::default()).map(|_| ())
    }
}

fn parse_bias(spec: &str) -> std::result::Result<(u32, f32), String> {
    let (id, bias) = spec
        .split_once('=')
        .ok_or_else(|| format!("`{spec}` is not ID=BIAS"))?;
    let id = id
        .trim()
        .parse()
        .map_err(|_| format!("`{spec}`: `{id}` is not a token id"))?;
    let bias = bias
        .trim()
        .parse()
        .map_err(|_| format!("`{spec}`: `{bias}` is not a number"))?;
    Ok((id, bias))
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors).
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// Wrap the prompt as one user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// System prompt (with --chat).
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// The prompt; read from stdin when omitted (minus one trailing newline).
    pub prompt: Option<String>,
}

/// A decoder model ready to generate, with what it needs around it.
pub struct LoadedModel {
    pub model: Box<dyn LanguageModel>,
    pub tokenizer: Tokenizer,
    /// From tokenizer_config.json or GGUF metadata, with the model's bos/eos tokens.
    pub chat_template: Option<ChatTemplate>,
    /// generation_config.json (or GGUF metadata): EOS ids and default sampling.
    pub defaults: GenerationDefaults,
}

/// Loads a decoder model (safetensors directory, GGUF file or hub id) for generation, with a
/// LoRA adapter attached when `adapter` is given.
pub fn load_language_model(args: &ModelArgs, adapter: Option<&Path>) -> Result<LoadedModel> {
    // Bad device or dtype names, and a missing adapter, are reported before anything is read.
    let device = args.device()?;
    let dtype = args.dtype()?;
    if let Some(dir) = adapter {
        let config = dir.join(wick::lora::CONFIG_FILE);
        if !config.is_file() {
            bail!(
                "--adapter {}: no {} there (expected a PEFT LoRA adapter directory)",
                dir.display(),
                wick::lora::CONFIG_FILE
            );
        }
    }
    let files = ModelFiles::resolve(&args.model)?;
    let loaded =
        load_causal_lm(&files, &device, dtype, adapter).with_context(|| match adapter {
            Some(dir) => format!(
                "loading model {} with adapter {}",
                files.describe(),
                dir.display()
            ),
            None => format!("loading model {}", files.describe()),
        })?;
    Ok(LoadedModel {
        model: Box::new(loaded.model),
        tokenizer: loaded.tokenizer,
        chat_template: loaded.chat_template,
        defaults: loaded.defaults,
    })
}

pub fn run(args: GenerateArgs) -> Result<()> {
    args.sampling.check()?;
    let prompt = match &args.prompt {
        Some(p) => p.clone(),
        None => read_stdin_prompt()?,
    };
    if prompt.is_empty() {
        bail!("the prompt is empty: give PROMPT or pipe text on stdin");
    }
    let mut loaded = load_language_model(&args.model, args.adapter.as_deref())?;
    let config = args.sampling.config(&loaded.defaults)?;
    let ids = if args.chat {
        let template = require_template(&loaded)?;
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::system(system.as_str()));
        }
        messages.push(ChatMessage::user(prompt));
        encode_chat(&loaded.tokenizer, template, &messages)?
    } else {
        encode(&loaded.tokenizer, &prompt, true)?
    };
    let out = stream(&mut loaded, &ids, &config)?;
    if std::io::stdout().is_terminal() {
        eprintln!();
    }
    print_stats(&out);
    Ok(())
}

fn read_stdin_prompt() -> Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        bail!("no prompt: give PROMPT or pipe text on stdin");
    }
    let mut text = String::new();
    stdin
        .lock()
        .read_to_string(&mut text)
        .context("reading the prompt from stdin")?;
    // `echo text | wick generate` should not end the prompt with a newline.
    let trimmed = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    Ok(trimmed.to_string())
}

pub fn require_template(loaded: &LoadedModel) -> Result<&ChatTemplate> {
    loaded.chat_template.as_ref().context(
        "the model has no chat template (tokenizer_config.json or GGUF metadata); \
         use `wick generate` without --chat for plain completion",
    )
}

pub fn encode(tokenizer: &Tokenizer, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
    let encoding = tokenizer
        .encode(text, add_special_tokens)
        .map_err(|e| wick::Error::Tokenize(e.to_string()))?;
    Ok(encoding.get_ids().to_vec())
}

/// The rendered conversation's ids; the template supplies any BOS itself, so the tokenizer adds
/// no special tokens (as transformers' `apply_chat_template` does).
pub fn encode_chat(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    messages: &[ChatMessage],
) -> Result<Vec<u32>> {
    let text = template.render(messages, true)?;
    encode(tokenizer, &text, false)
}

/// Generates, printing each delta to stdout as it comes. A closed stdout (`| head`) ends
/// generation quietly; other write errors are reported.
pub fn stream(
    loaded: &mut LoadedModel,
    ids: &[u32],
    config: &GenerationConfig,
) -> Result<GenerationOutput> {
    let mut stdout = std::io::stdout();
    let mut write_err = None;
    let out = generate_until(
        &mut loaded.model,
        &loaded.tokenizer,
        ids,
        config,
        |delta| match stdout
            .write_all(delta.as_bytes())
            .and_then(|()| stdout.flush())
        {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                write_err = Some(e);
                ControlFlow::Break(())
            }
        },
    )?;
    match write_err {
        Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("writing to stdout")
        }
        _ => Ok(out),
    }
}

pub fn print_stats(out: &GenerationOutput) {
    let truncated = if out.truncated_tokens > 0 {
        format!(" ({} truncated)", out.truncated_tokens)
    } else {
        String::new()
    };
    eprintln!(
        "prompt: {} tokens{truncated}, prefill {:.1} tok/s | generated: {} tokens, decode {:.1} \
         tok/s | finish: {} | seed: {}",
        out.prompt_tokens,
        out.prefill_tokens_per_sec(),
        out.token_ids.len(),
        out.decode_tokens_per_sec(),
        out.finish_reason.as_str(),
        out.seed
    );
}
