// Buffers shared by the kernels: Python buffers read, bytes objects and text written.

#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace tsv {

// A Py_buffer released when it goes out of scope.
struct Buffer {
    Py_buffer view{};
    bool held = false;
    Buffer() = default;
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    ~Buffer() {
        if (held) PyBuffer_Release(&view);
    }
    bool get(PyObject* object) {
        held = PyObject_GetBuffer(object, &view, PyBUF_C_CONTIGUOUS) == 0;
        return held;
    }
    const char* bytes() const { return static_cast<const char*>(view.buf); }
    Py_ssize_t size() const { return view.len; }
    template <typename T>
    const T* as() const { return static_cast<const T*>(view.buf); }
};

// A bytes object filled in place (sized for the most rows possible, shrunk at the end).
struct Output {
    PyObject* object = nullptr;
    char* data = nullptr;
    ~Output() { Py_XDECREF(object); }
    bool allocate(Py_ssize_t bytes) {
        object = PyBytes_FromStringAndSize(nullptr, bytes > 0 ? bytes : 1);
        if (object) data = PyBytes_AS_STRING(object);
        return object != nullptr;
    }
    template <typename T>
    T* as() { return reinterpret_cast<T*>(data); }
    // Hands the bytes over, `bytes` long.
    PyObject* finish(Py_ssize_t bytes) {
        if (_PyBytes_Resize(&object, bytes) != 0) return nullptr;
        PyObject* done = object;
        object = nullptr;
        return done;
    }
};

// A growing output buffer written through a raw pointer (std::string's checks per append
// cost more than the formatting).
class TextBuffer {
  public:
    ~TextBuffer() { std::free(data_); }
    // Room for `bytes` more; false if out of memory.
    bool reserve(size_t bytes) {
        if (used_ + bytes <= capacity_) return true;
        size_t capacity = std::max(capacity_ * 2, used_ + bytes);
        char* grown = static_cast<char*>(std::realloc(data_, capacity));
        if (!grown) return false;
        data_ = grown;
        capacity_ = capacity;
        return true;
    }
    char* end() { return data_ + used_; }
    void advance(size_t bytes) { used_ += bytes; }
    void put(char c) { data_[used_++] = c; }
    void put(const char* text, size_t bytes) {
        std::memcpy(data_ + used_, text, bytes);
        used_ += bytes;
    }
    void copy_within(size_t start, size_t stop) {  // a span written before, appended again
        std::memmove(data_ + used_, data_ + start, stop - start);
        used_ += stop - start;
    }
    size_t size() const { return used_; }
    const char* data() const { return data_; }

  private:
    char* data_ = nullptr;
    size_t used_ = 0, capacity_ = 0;
};

}  // namespace tsv
