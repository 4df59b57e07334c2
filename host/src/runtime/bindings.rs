//! Host bindings for the `flowenrich:enrich/enricher` world (the only `bindgen!` call).
#![allow(missing_docs)] // generated code

wasmtime::component::bindgen!({
    world: "enricher",
    path: "../wit",
});
