//! The deployment controller: turns a Deployment's manifest into Instance
//! objects. Planning (pure, tested in isolation) comes first: [`plan`].

pub mod plan;
