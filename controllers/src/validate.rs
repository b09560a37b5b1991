//! Validation controllers (filled once manifests land).
