//! The crate's error type.

use crate::img::ImageError;

/// Every error `criu-proto` returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing an image failed.
    #[error(transparent)]
    Image(#[from] ImageError),
}
