//! What every target checks besides "no panic, no hang, no OOM" (libFuzzer's own findings).

/// wick's errors are one clear line: a message that is empty or spans lines is a finding.
pub fn check_error(what: &str, error: &wick::Error) {
    let text = error.to_string();
    assert!(!text.trim().is_empty(), "{what}: empty error message");
    assert!(
        !text.contains('\n'),
        "{what}: error message spans several lines: {text:?}"
    );
}

/// The same for a message that is not a `wick::Error` (the training-data parser's).
pub fn check_message(what: &str, text: &str) {
    assert!(!text.trim().is_empty(), "{what}: empty error message");
    assert!(
        !text.contains('\n'),
        "{what}: error message spans several lines: {text:?}"
    );
}
