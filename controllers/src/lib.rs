//! boshd: the reconcile runtime and controllers.
pub mod runtime;
