//! The human (HMP) and machine (QMP) monitors over one command layer.
