//! Block backends and the node graph (raw, qcow2, chains, jobs). Knows nothing about devices or KVM.
