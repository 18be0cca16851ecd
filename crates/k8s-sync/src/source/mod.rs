//! The sources of Kubernetes objects: the API (kube-runtime watchers) and a manifest directory.
//! Each keeps a [`crate::Snapshot`] and hands every change to the [`crate::pipeline`].

pub mod api;
pub mod manifest;
