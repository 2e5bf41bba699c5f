//! Shared test helpers: where the real models and fixtures live, numeric comparison that
//! reports the worst element, greedy-token comparisons that survive near-ties (and greedy runs
//! of wick that record each step's margin), a local hub-style HTTP server, and llama.cpp's
//! tokenizer test suite.

pub mod cli;
pub mod compare;
pub mod greedy;
pub mod http;
pub mod hub_server;
pub mod near_tie;
pub mod paths;
pub mod vocab_suite;
