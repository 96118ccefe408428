# `just ci` runs exactly what CI runs.
ci:
    .ci/run

test:
    cargo test

demo:
    cargo run --release -- demo

bench:
    cargo bench --bench auth
