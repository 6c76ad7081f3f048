//! CRIU-RPC transport: one protobuf message per `SOCK_SEQPACKET` packet, the
//! swrk socketpair and the service listener, `SCM_RIGHTS`, `SO_PEERCRED`, the
//! request loop that owns the protocol rules, and a client.
#![deny(unsafe_code)]
#![warn(missing_docs)]
pub mod requests;
