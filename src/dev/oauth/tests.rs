//! Tests of the OAuth provider.
