//! Stage 2, connections: the socket table that joins every kernel event to
//! its connection (owner process, role, addresses; `table`) and what TCP did
//! on it (retransmits, connect latency and failures; `tcp_stats`).
pub mod table;
pub mod tcp_stats;
