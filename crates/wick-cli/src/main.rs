//! The `wick` command-line tool.

mod args;
mod commands;

use clap::{Parser, Subcommand};

// Model inference allocates and frees large activation buffers every layer; glibc malloc returns
// them to the OS and page-faults them back in each time, mimalloc keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "wick",
    version,
    about = "Local LoRA fine-tuning, text generation and sentence embeddings"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sentence embeddings, one JSON array (or one .npy row) per input text.
    Embed(commands::embed::EmbedArgs),
    /// Text generation: streams the completion of PROMPT to stdout, statistics to stderr.
    Generate(commands::generate::GenerateArgs),
    /// Multi-turn chat with the model's chat template (reads stdin lines when not a terminal).
    Chat(commands::chat::ChatArgs),
    /// LoRA fine-tuning on JSONL data, with validation, checkpoints and --resume.
    Train(Box<commands::train::TrainArgs>),
    /// Merge a PEFT LoRA adapter into its base model and write a Hugging Face model directory.
    Merge(commands::merge::MergeArgs),
    /// OpenAI-compatible HTTP server: embeddings, chat and completions, LoRA adapters by name.
    Serve(commands::serve::ServeArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Embed(args) => commands::embed::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Chat(args) => commands::chat::run(args),
        Command::Train(args) => commands::train::run(*args),
        Command::Merge(args) => commands::merge::run(args),
        Command::Serve(args) => commands::serve::run(args),
    };
    if let Err(err) = result {
        // One line: the chain of causes, outermost first.
        let chain: Vec<String> = err.chain().map(|e| e.to_string()).collect();
        eprintln!("error: {}", dedup_chain(chain).join(": "));
        std::process::exit(1);
    }
}

/// Drops causes whose text is already contained in the previous message (thiserror variants
/// often embed their source).
fn dedup_chain(chain: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(chain.len());
    for msg in chain {
        if out.last().is_some_and(|prev| prev.contains(&msg)) {
            continue;
        }
        out.push(msg);
    }
    out
}
