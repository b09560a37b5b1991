//! The agent's integration tests, compiled into one binary.

mod integration_tests;
