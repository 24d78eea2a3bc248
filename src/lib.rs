//! settled: settles crypto invoices against the merchant's own full nodes.
//!
//! The layout follows the data: chain followers ([`watcher`]) read nodes and hand what
//! they find to the [`store`], which judges each invoice with the pure [`lifecycle`]
//! function and commits the changes, their events and the chain cursor in one
//! transaction; the [`admin`] server only reads and relays the backend's decisions.

pub(crate) mod admin;
pub(crate) mod amount;
pub(crate) mod api;
pub(crate) mod bitcoin;
pub(crate) mod bitcoind;
pub(crate) mod chain;
pub(crate) mod chains;
pub mod cli;
pub(crate) mod config;
pub(crate) mod coverage;
pub mod daemon;
pub(crate) mod deposit;
pub(crate) mod ethnode;
pub(crate) mod events;
pub(crate) mod evm;
pub(crate) mod fault;
pub(crate) mod heads;
pub(crate) mod httprpc;
pub(crate) mod invoice;
pub(crate) mod keys;
pub(crate) mod lifecycle;
pub(crate) mod rpc;
pub(crate) mod service;
pub(crate) mod store;
pub(crate) mod telemetry;
pub(crate) mod watcher;
pub(crate) mod webhook;
pub(crate) mod zmq;
