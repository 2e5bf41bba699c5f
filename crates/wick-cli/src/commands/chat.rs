//! `wick chat`: a multi-turn conversation through the model's chat template. Each line typed (or
//! read from stdin when it is not a terminal) is one user turn; replies stream to stdout, one
//! per turn, statistics go to stderr. `/exit` (or end of input) quits, `/reset` forgets the
//! conversation but keeps the system prompt.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use wick::io::chat_template::ChatMessage;

use super::generate::{
    encode_chat, load_language_model, print_stats, require_template, stream, SamplingArgs,
};
use crate::args::ModelArgs;

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors).
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// System prompt at the start of the conversation.
    #[arg(long)]
    pub system: Option<String>,
}

pub fn run(args: ChatArgs) -> Result<()> {
    args.sampling.check()?;
    let mut loaded = load_language_model(&args.model, args.adapter.as_deref())?;
    let config = args.sampling.config(&loaded.defaults)?;
    require_template(&loaded)?;

    let interactive = std::io::stdin().is_terminal();
    let start: Vec<ChatMessage> = args.system.iter().map(ChatMessage::system).collect();
    let mut history = start.clone();
    if interactive {
        eprintln!(
            "chatting with {} (/exit to quit, /reset to start over)",
            args.model.model
        );
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            std::io::stderr().flush().ok();
        }
        let Some(line) = lines.next() else {
            break; // end of input
        };
        let line = line.context("reading stdin")?;
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history.clone_from(&start);
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage::user(line));
        let template = require_template(&loaded)?;
        let turn = encode_chat(&loaded.tokenizer, template, &history)
            .and_then(|ids| stream(&mut loaded, &ids, &config));
        let out = match turn {
            Ok(out) => out,
            // A bad turn (say, a conversation grown past the context) need not end the session.
            Err(e) if interactive => {
                eprintln!("error: {e:#} (/reset starts over)");
                history.pop();
                continue;
            }
            Err(e) => return Err(e),
        };
        println!();
        print_stats(&out);
        history.push(ChatMessage::assistant(out.text));
    }
    Ok(())
}
