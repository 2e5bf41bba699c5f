pub mod chat;
pub mod embed;
pub mod generate;
