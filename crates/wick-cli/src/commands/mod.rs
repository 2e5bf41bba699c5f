pub mod chat;
pub mod embed;
pub mod generate;
pub mod merge;
pub mod perplexity;
pub mod serve;
pub mod tokenize;
pub mod train;
