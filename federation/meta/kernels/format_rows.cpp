// Writing result rows: every column of every row in one pass, numbers rounded to 10
// significant digits in the layout meta/format.py documents.

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "buffers.h"
#include "kernels.h"

namespace tsv {
namespace {

constexpr int SIGNIFICANT_DIGITS = 10;
constexpr Py_ssize_t MAX_NUMBER_BYTES = 48;  // the most any number format below writes
// Below this -log10 p, exp(ln p) is a normal float64 and prints as itself.
constexpr double TAIL_NEG_LOG10_P = 300.0;
constexpr double POWERS_OF_TEN[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                    1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                    1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

// Round to a whole number, half to even, for 0 <= x < 2^52: adding 2^52 leaves no bits for a
// fraction, so the FPU rounds (in its default mode, ties to even). A call to rint costs more.
// The build must not use -ffast-math, which would fold this to x.
inline double round_whole(double x) {
    constexpr double TWO_52 = 4503599627370496.0;
    return (x + TWO_52) - TWO_52;  // not folded away: the build has no -ffast-math
}

// floor(log10(x)) for x > 0, or one less (the caller checks): from the binary exponent, so no
// call to log10.
inline int decimal_exponent_estimate(double x) {
    int binary_exponent;
    std::frexp(x, &binary_exponent);  // x = f · 2^binary_exponent, 0.5 <= f < 1
    return static_cast<int>(std::floor((binary_exponent - 1) * 0.30102999566398120));
}

// x > 0 (finite) as digits × 10^exponent, `digits` the 10 leading significant digits,
// correctly rounded (ties to even): 10^9 <= digits < 10^10.
void round_significant(double x, uint64_t& digits, int& exponent) {
    int estimate = decimal_exponent_estimate(x);
    for (int attempt = 0; attempt < 3; ++attempt) {
        const int shift = SIGNIFICANT_DIGITS - 1 - estimate;
        if (shift < -22 || shift > 22) break;  // 10^shift is not exact: see below
        // One rounding (10^shift is exact), so `scaled` is within 2e-6 of the true product.
        const double scaled = shift >= 0 ? x * POWERS_OF_TEN[shift] : x / POWERS_OF_TEN[-shift];
        if (scaled >= 1e10 - 0.5) {  // the estimate was one too low (or it rounds up to 10^10)
            if (scaled < 1e10 - 0.5 + 1e-4) break;  // too near the tie 9999999999.5
            if (scaled < 1e10) {
                digits = 1000000000;
                exponent = estimate + 1;
                return;
            }
            ++estimate;
            continue;
        }
        const double rounded = round_whole(scaled);
        if (std::fabs(std::fabs(scaled - rounded) - 0.5) < 1e-4) break;  // too near a tie
        if (rounded < 1e9) {  // the estimate was one too high
            --estimate;
            continue;
        }
        digits = static_cast<uint64_t>(rounded);
        exponent = estimate;
        return;
    }
    // Exact decimal rounding of the binary value (the rare cases above): d.ddddddddde±XX.
    char text[32];
    auto result = std::to_chars(text, text + sizeof(text), x, std::chars_format::scientific,
                                SIGNIFICANT_DIGITS - 1);
    *result.ptr = '\0';
    digits = 0;
    const char* p = text;
    for (; *p != 'e'; ++p)
        if (*p != '.') digits = digits * 10 + static_cast<uint64_t>(*p - '0');
    exponent = std::atoi(p + 1);
}

constexpr char DIGIT_PAIRS[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

// The 10 digits of 10^9 <= value < 10^10, two at a time.
inline void ten_digits(uint64_t value, char* digits) {
    for (int i = SIGNIFICANT_DIGITS - 2; i >= 0; i -= 2) {
        const uint64_t pair = value % 100;
        value /= 100;
        digits[i] = DIGIT_PAIRS[2 * pair];
        digits[i + 1] = DIGIT_PAIRS[2 * pair + 1];
    }
}

// x with 10 significant digits, as Arrow casts a double to text (double-conversion's
// shortest form): plain decimals for 1e-6 <= |x| < 1e10, else d.ddde-k / d.ddde+k; no
// trailing zeros; "NA" if not finite. Writes at most 32 bytes.
size_t format_significant(double x, char* out) {
    if (!std::isfinite(x)) {
        std::memcpy(out, "NA", 2);
        return 2;
    }
    char* p = out;
    if (std::signbit(x)) *p++ = '-';
    x = std::fabs(x);
    if (x == 0) {
        *p++ = '0';
        return p - out;
    }
    uint64_t value;
    int exponent;
    round_significant(x, value, exponent);
    char digits[SIGNIFICANT_DIGITS];
    ten_digits(value, digits);
    int n = SIGNIFICANT_DIGITS;
    while (n > 1 && digits[n - 1] == '0') --n;

    if (exponent >= -6 && exponent < 10) {
        if (exponent < 0) {
            *p++ = '0';
            *p++ = '.';
            for (int i = -1; i > exponent; --i) *p++ = '0';
            std::memcpy(p, digits, n);
            p += n;
        } else {
            for (int i = 0; i <= exponent; ++i) *p++ = i < n ? digits[i] : '0';
            if (n > exponent + 1) {
                *p++ = '.';
                std::memcpy(p, digits + exponent + 1, n - exponent - 1);
                p += n - exponent - 1;
            }
        }
    } else {
        *p++ = digits[0];
        if (n > 1) {
            *p++ = '.';
            std::memcpy(p, digits + 1, n - 1);
            p += n - 1;
        }
        *p++ = 'e';
        *p++ = exponent < 0 ? '-' : '+';
        p = std::to_chars(p, p + 8, exponent < 0 ? -exponent : exponent).ptr;
    }
    return p - out;
}

// A whole number (rounded half to even) or "NA".
size_t format_integer(double x, char* out) {
    if (!std::isfinite(x) || std::fabs(x) >= 9.0e18) {
        std::memcpy(out, "NA", 2);
        return 2;
    }
    return std::to_chars(out, out + 24, static_cast<int64_t>(std::nearbyint(x))).ptr - out;
}

// p, exact in the tail: below 1e-300 it is written from -log10 p as m.mmmmme-k, never as 0
// (sumstats.format_p_value).
size_t format_p(double p, double neg_log10_p, char* out) {
    if (!(std::isfinite(neg_log10_p) && neg_log10_p >= TAIL_NEG_LOG10_P))
        return format_significant(p, out);
    double exponent = std::floor(neg_log10_p);
    double mantissa = std::pow(10.0, exponent - neg_log10_p);
    if (mantissa < 1) {
        mantissa *= 10;
        exponent += 1;
    }
    return static_cast<size_t>(
        std::snprintf(out, 48, "%.5fe-%d", mantissa, static_cast<int>(exponent)));
}

enum class Kind { CONSTANT, INT64, INTEGER, SIGNIFICANT, P_VALUE, CODED_TEXT, FIXED_WIDTH, JOIN };

// One output column: what to write and from which buffers.
struct OutputColumn {
    Kind kind;
    Buffer values, second, third;  // meaning depends on kind; see format_rows' docstring
    Py_ssize_t width = 0;           // FIXED_WIDTH: bytes per row; otherwise the most a row takes
    std::vector<Py_ssize_t> parts;  // JOIN: earlier columns whose text is joined
    std::string separator;          // JOIN
};

bool need_rows(const Buffer& buffer, Py_ssize_t item, Py_ssize_t rows, const char* what) {
    if (buffer.size() < item * rows) {
        PyErr_Format(PyExc_ValueError, "format_rows: %s column has fewer than %zd rows", what,
                     rows);
        return false;
    }
    return true;
}

bool read_column(PyObject* spec, Py_ssize_t index, Py_ssize_t rows, OutputColumn& column) {
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) < 2 ||
        !PyUnicode_Check(PyTuple_GET_ITEM(spec, 0))) {
        PyErr_SetString(PyExc_ValueError, "format_rows: each column is a tuple (kind, ...)");
        return false;
    }
    const char* kind_text = PyUnicode_AsUTF8(PyTuple_GET_ITEM(spec, 0));
    if (!kind_text) return false;
    const std::string_view kind(kind_text);
    const Py_ssize_t size = PyTuple_GET_SIZE(spec);
    PyObject* first = PyTuple_GET_ITEM(spec, 1);
    if (kind == "constant") {
        column.kind = Kind::CONSTANT;
        if (!column.values.get(first)) return false;
        column.width = column.values.size();
        return true;
    }
    if (kind == "int64" || kind == "integer" || kind == "significant") {
        column.kind = kind == "int64" ? Kind::INT64
                                      : (kind == "integer" ? Kind::INTEGER : Kind::SIGNIFICANT);
        column.width = MAX_NUMBER_BYTES;
        return column.values.get(first) && need_rows(column.values, 8, rows, "a numeric");
    }
    if (kind == "p_value" && size == 3) {
        column.kind = Kind::P_VALUE;
        column.width = MAX_NUMBER_BYTES;
        return column.values.get(first) && column.second.get(PyTuple_GET_ITEM(spec, 2)) &&
               need_rows(column.values, 8, rows, "a p") && need_rows(column.second, 8, rows, "a p");
    }
    if (kind == "coded_text" && size == 4) {
        // (codes int64, offsets int32 of the distinct strings, their bytes)
        column.kind = Kind::CODED_TEXT;
        if (!column.values.get(first) || !column.second.get(PyTuple_GET_ITEM(spec, 2)) ||
            !column.third.get(PyTuple_GET_ITEM(spec, 3)) ||
            !need_rows(column.values, 8, rows, "a coded text"))
            return false;
        const Py_ssize_t n_strings = column.second.size() / 4 - 1;
        const auto* offsets = column.second.as<int32_t>();
        const auto* codes = column.values.as<int64_t>();
        for (Py_ssize_t i = 0; i < rows; ++i)
            if (codes[i] < 0 || codes[i] >= n_strings) {
                PyErr_SetString(PyExc_ValueError, "format_rows: a text code is out of range");
                return false;
            }
        if (n_strings < 0 || offsets[0] < 0 || offsets[n_strings] > column.third.size()) {
            PyErr_SetString(PyExc_ValueError, "format_rows: text offsets past the data");
            return false;
        }
        for (Py_ssize_t i = 0; i < n_strings; ++i) {
            if (offsets[i + 1] < offsets[i]) {
                PyErr_SetString(PyExc_ValueError, "format_rows: text offsets decrease");
                return false;
            }
            column.width = std::max<Py_ssize_t>(column.width, offsets[i + 1] - offsets[i]);
        }
        return true;
    }
    if (kind == "fixed_width" && size == 3) {
        column.kind = Kind::FIXED_WIDTH;
        column.width = PyLong_AsSsize_t(PyTuple_GET_ITEM(spec, 2));
        if (column.width < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "format_rows: bad width");
            return false;
        }
        return column.values.get(first) && need_rows(column.values, column.width, rows, "a text");
    }
    if (kind == "join" && size == 3 && PyTuple_Check(first)) {
        column.kind = Kind::JOIN;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(first); ++i) {
            const Py_ssize_t part = PyLong_AsSsize_t(PyTuple_GET_ITEM(first, i));
            if (part < 0 || part >= index) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_ValueError, "format_rows: join of a later column");
                return false;
            }
            column.parts.push_back(part);
        }
        // Filled in by format_rows, which knows the parts' widths.
        Buffer separator;
        if (!separator.get(PyTuple_GET_ITEM(spec, 2))) return false;
        column.separator.assign(separator.bytes(), separator.size());
        return true;
    }
    PyErr_Format(PyExc_ValueError, "format_rows: unknown column spec '%s'",
                 std::string(kind).c_str());
    return false;
}

bool write_rows(const std::vector<OutputColumn>& columns, Py_ssize_t rows, TextBuffer& out) {
    size_t row_bytes = 1;  // the most one row can take: every column at its widest, + tabs
    for (const OutputColumn& column : columns) row_bytes += static_cast<size_t>(column.width) + 1;
    std::vector<size_t> start(columns.size()), stop(columns.size());
    for (Py_ssize_t row = 0; row < rows; ++row) {
        if (!out.reserve(row_bytes)) return false;
        for (size_t c = 0; c < columns.size(); ++c) {
            const OutputColumn& column = columns[c];
            if (c) out.put('\t');
            start[c] = out.size();
            switch (column.kind) {
                case Kind::CONSTANT:
                    out.put(column.values.bytes(), column.values.size());
                    break;
                case Kind::INT64:
                    out.advance(std::to_chars(out.end(), out.end() + MAX_NUMBER_BYTES,
                                              column.values.as<int64_t>()[row])
                                    .ptr -
                                out.end());
                    break;
                case Kind::INTEGER:
                    out.advance(format_integer(column.values.as<double>()[row], out.end()));
                    break;
                case Kind::SIGNIFICANT:
                    out.advance(format_significant(column.values.as<double>()[row], out.end()));
                    break;
                case Kind::P_VALUE:
                    out.advance(format_p(column.values.as<double>()[row],
                                         column.second.as<double>()[row], out.end()));
                    break;
                case Kind::CODED_TEXT: {
                    const int64_t code = column.values.as<int64_t>()[row];
                    const auto* offsets = column.second.as<int32_t>();
                    out.put(column.third.bytes() + offsets[code], offsets[code + 1] - offsets[code]);
                    break;
                }
                case Kind::FIXED_WIDTH:
                    out.put(column.values.bytes() + row * column.width, column.width);
                    break;
                case Kind::JOIN:
                    for (size_t i = 0; i < column.parts.size(); ++i) {
                        if (i) out.put(column.separator.data(), column.separator.size());
                        out.copy_within(start[column.parts[i]], stop[column.parts[i]]);
                    }
                    break;
            }
            stop[c] = out.size();
        }
        out.put('\n');
    }
    return true;
}

}  // namespace

// format_rows(n_rows, columns) -> bytes; see meta.format.format_rows.
PyObject* format_rows(PyObject*, PyObject* args) {
    Py_ssize_t rows;
    PyObject* specs;
    if (!PyArg_ParseTuple(args, "nO!", &rows, &PyList_Type, &specs)) return nullptr;
    if (rows < 0) {
        PyErr_SetString(PyExc_ValueError, "format_rows: n_rows must be >= 0");
        return nullptr;
    }
    const Py_ssize_t n_columns = PyList_GET_SIZE(specs);
    std::vector<OutputColumn> columns(n_columns);
    for (Py_ssize_t c = 0; c < n_columns; ++c) {
        if (!read_column(PyList_GET_ITEM(specs, c), c, rows, columns[c])) return nullptr;
        for (Py_ssize_t part : columns[c].parts)
            columns[c].width += columns[part].width + static_cast<Py_ssize_t>(columns[c].separator.size());
    }
    TextBuffer out;
    bool written;
    Py_BEGIN_ALLOW_THREADS;
    written = write_rows(columns, rows, out);
    Py_END_ALLOW_THREADS;
    if (!written) return PyErr_NoMemory();
    return PyBytes_FromStringAndSize(out.data(), static_cast<Py_ssize_t>(out.size()));
}

}  // namespace tsv
