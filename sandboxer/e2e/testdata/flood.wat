;; flood writes 4 KiB lines ("yyyy...\n") to stdout forever and ignores
;; write errors, as a hostile guest would: only a stop ends it.
;; Rebuild: wat2wasm flood.wat -o flood.wasm (go generate ./sandboxer/e2e).
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; iovec at 0: buf = 16, len = 4096; nwritten at 8.
  (data (i32.const 0) "\10\00\00\00\00\10\00\00")
  (func (export "_start")
    (memory.fill (i32.const 16) (i32.const 121) (i32.const 4095))
    (i32.store8 (i32.const 4111) (i32.const 10))
    (loop $l
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $l))))
