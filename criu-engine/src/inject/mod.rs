//! Syscall injection (placeholder until the injection lands).
