//! The typed etcd store.
