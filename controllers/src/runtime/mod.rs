//! The reconcile runtime.
