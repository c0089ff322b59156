// The meta-analysis's C++ text kernels, one per file, gathered into `federation._tsv` by
// module.cpp. They take and return plain buffers (bytes, and numpy arrays through the buffer
// protocol) and release the GIL while they work, so the scan threads and the bin workers keep
// both cores busy. tests/unit/test_tsv_kernels.py holds them to plain-Python statements of
// their rules.

#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

namespace tsv {

// parse_block(text, n_fields, field_of_column, need_n) -> tuple (parse_rows.cpp)
PyObject* parse_block(PyObject* self, PyObject* args);

// format_rows(n_rows, columns) -> bytes (format_rows.cpp)
PyObject* format_rows(PyObject* self, PyObject* args);

}  // namespace tsv
