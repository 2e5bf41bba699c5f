//! The run folder is the unit of state: `--resume DIR` reads and writes only DIR, its
//! train.toml stores local paths relative to it (so a moved or copied run resumes in place),
//! and `--out` onto a folder that already holds a run refuses unless `--overwrite`, which then
//! replaces only wick's own run files.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use wick::train::checkpoint;

use super::{read_toml, TrainArgs};

/// Name of the options file written into the run folder.
pub const OPTIONS_FILE: &str = "train.toml";

/// The plain files a training run writes into its folder (besides `checkpoint-N/`).
const RUN_FILES: [&str; 5] = [
    OPTIONS_FILE,
    wick::train::metrics::METRICS_FILE,
    "loss.png",
    wick::lora::CONFIG_FILE,
    wick::lora::WEIGHTS_FILE,
];

/// Whether `name` is something wick's training writes into a run folder: one of [`RUN_FILES`]
/// (or the `.tmp` it is written through), `checkpoint-N` or `checkpoint-N.tmp`.
fn is_run_file(name: &str) -> bool {
    let base = name.strip_suffix(".tmp").unwrap_or(name);
    RUN_FILES.contains(&base) || checkpoint::step_of(base).is_some()
}

/// The run files in `dir`, sorted (none when `dir` does not exist).
fn run_files(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        if let Some(name) = entry.file_name().to_str().filter(|n| is_run_file(n)) {
            found.push(name.to_string());
        }
    }
    found.sort_by_key(|n| (checkpoint::step_of(n), n.clone()));
    Ok(found)
}

/// Refuses a fresh run into a folder that holds a run, unless `overwrite`.
pub fn check_out(out: &Path, overwrite: bool) -> Result<()> {
    if out.exists() && !out.is_dir() {
        bail!("--out {}: not a folder", out.display());
    }
    let found = run_files(out)?;
    if found.is_empty() || overwrite {
        return Ok(());
    }
    const SHOWN: usize = 6;
    let mut list = found[..found.len().min(SHOWN)].join(", ");
    if found.len() > SHOWN {
        list.push_str(&format!(" and {} more", found.len() - SHOWN));
    }
    bail!(
        "--out {dir} already holds a training run ({list}); continue it with --resume {dir}, \
         replace its run files with --overwrite, or choose another --out",
        dir = out.display()
    )
}

/// With `--overwrite`: removes the previous run's files from `out`; nothing else in it.
pub fn clear_run(out: &Path) -> Result<()> {
    for name in run_files(out)? {
        let path = out.join(&name);
        let removed = match path.is_dir() {
            true => std::fs::remove_dir_all(&path),
            false => std::fs::remove_file(&path),
        };
        removed.with_context(|| format!("--overwrite: removing {}", path.display()))?;
    }
    Ok(())
}

/// What `--resume DIR` names: the run folder, and the checkpoint when DIR is one.
pub struct ResumeTarget {
    pub run: PathBuf,
    pub checkpoint: Option<PathBuf>,
}

pub fn resume_target(dir: &Path) -> Result<ResumeTarget> {
    if !dir.exists() {
        bail!("--resume {}: the folder does not exist", dir.display());
    }
    if !dir.is_dir() {
        bail!(
            "--resume {}: not a folder (give a run folder or a checkpoint-N in one)",
            dir.display()
        );
    }
    let is_checkpoint = dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(checkpoint::step_of)
        .is_some();
    let target = match is_checkpoint {
        true => ResumeTarget {
            run: match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            },
            checkpoint: Some(dir.to_path_buf()),
        },
        false => ResumeTarget {
            run: dir.to_path_buf(),
            checkpoint: None,
        },
    };
    let has_checkpoints = !checkpoint::candidates(&target.run)?.is_empty();
    if !has_checkpoints && !target.run.join(OPTIONS_FILE).is_file() {
        bail!(
            "--resume {}: not a training run (no {OPTIONS_FILE} or checkpoint-N in it)",
            dir.display()
        );
    }
    Ok(target)
}

/// The options saved in `run/train.toml` (None without one), local paths resolved against
/// `run`. A file from before paths were stored relative to the run names `out`: that is
/// ignored (the run continues in `run`) and its paths stay relative to the current directory,
/// as they were written.
pub fn saved_options(run: &Path) -> Result<Option<TrainArgs>> {
    let path = run.join(OPTIONS_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let mut saved = read_toml(&path)?;
    if let Some(old_out) = saved.out.take() {
        eprintln!(
            "{}: out = {:?} is ignored (written by an older wick): the run continues in {}",
            path.display(),
            old_out.display().to_string(),
            run.display()
        );
        return Ok(Some(saved));
    }
    let resolve = |p: &mut Option<PathBuf>| {
        if let Some(p) = p {
            *p = run.join(&*p);
        }
    };
    resolve(&mut saved.data);
    resolve(&mut saved.valid);
    if let Some(m) = &saved.model {
        if is_local_spec(m) {
            saved.model = Some(run.join(m).display().to_string());
        }
    }
    Ok(Some(saved))
}

/// A model spec as stored in train.toml names a local path (hub ids never start like this).
fn is_local_spec(spec: &str) -> bool {
    spec.starts_with("./") || spec.starts_with("../") || Path::new(spec).is_absolute()
}

/// Writes `args` as `out/train.toml`: without `out` and `resume`, local paths relative to `out`.
pub fn save_options(args: &TrainArgs, out: &Path) -> Result<()> {
    let base = out
        .canonicalize()
        .with_context(|| format!("reading {}", out.display()))?;
    let relative = |p: &Path| -> Result<PathBuf> {
        let abs = p
            .canonicalize()
            .with_context(|| format!("reading {}", p.display()))?;
        Ok(relative_to(&abs, &base).unwrap_or(abs))
    };
    let mut saved = args.clone();
    saved.resume = None;
    saved.out = None;
    saved.data = args.data.as_deref().map(relative).transpose()?;
    saved.valid = args.valid.as_deref().map(relative).transpose()?;
    if let Some(spec) = &args.model {
        if Path::new(spec).exists() {
            let rel = relative(Path::new(spec))?;
            let text = rel
                .to_str()
                .with_context(|| format!("--model {spec}: the path is not UTF-8"))?;
            saved.model = Some(match is_local_spec(text) {
                true => text.to_string(),
                false => format!("./{text}"),
            });
        }
    }
    let text = toml::to_string(&saved).context("writing the run's options")?;
    wick::io::npy::write_atomic(&out.join(OPTIONS_FILE), text.as_bytes())?;
    Ok(())
}

/// `path` relative to `base` (both absolute and canonical); None when they share no root.
fn relative_to(path: &Path, base: &Path) -> Option<PathBuf> {
    let p: Vec<Component> = path.components().collect();
    let b: Vec<Component> = base.components().collect();
    if p.first() != b.first() {
        return None;
    }
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut rel = PathBuf::new();
    for _ in common..b.len() {
        rel.push("..");
    }
    for c in &p[common..] {
        rel.push(c);
    }
    if rel.as_os_str().is_empty() {
        rel.push(".");
    }
    Some(rel)
}

/// Whether `a` and `b` name the same folder (`b` may not exist yet).
pub fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
