//! Running a built binary as a user would: arguments, bytes on stdin, captured output.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `bin` with `args`, writes `stdin` to it and waits for it to finish.
pub fn run(bin: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut pipe = child.stdin.take().expect("stdin is piped");
    // A command that fails early exits without reading stdin; that is not a test failure.
    if let Err(e) = pipe.write_all(stdin) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    drop(pipe);
    child.wait_with_output().expect("the binary finishes")
}
