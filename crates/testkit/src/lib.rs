//! Shared test helpers: where the real models and fixtures live, numeric comparison that
//! reports the worst element, and a local hub-style HTTP server.

pub mod cli;
pub mod compare;
pub mod http;
pub mod hub_server;
pub mod paths;
