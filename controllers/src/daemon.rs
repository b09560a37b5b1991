//! Wiring of boshd.
