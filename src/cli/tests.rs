//! Whole command lines through [`super::parse_with`].
