//! G. Security: bus permissions (G1), bus authentication (G2), canary
//! secrets (G5), shell metacharacters in names and properties (G6).
