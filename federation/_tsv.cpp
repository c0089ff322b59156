// Text kernels of the meta-analysis: reading GWAS-SSF rows and writing result rows.
//
// Both run once per row over millions of rows, where a numpy/Arrow pass per check or per
// column costs more than the statistics themselves. They take and return plain buffers
// (bytes, and numpy arrays through the buffer protocol) and release the GIL while they work,
// so the scan threads and the bin workers keep both cores busy.
//
// The rules are the project's, documented where Python uses them: the row checks in
// `meta_inputs.py` (DropReason order, NA_VALUES, chromosome codes), the number formats in
// `meta_format.py`. tests/unit/test_tsv_kernels.py holds both to plain-Python versions.

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

// ----------------------------------------------------------------------------------------
// Buffers
// ----------------------------------------------------------------------------------------

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

// ----------------------------------------------------------------------------------------
// Reading rows (meta_inputs.parse_block)
// ----------------------------------------------------------------------------------------

// The columns the meta-analysis reads, in the order of meta_inputs.KERNEL_COLUMNS.
enum Column { CHROMOSOME, POSITION, EFFECT, OTHER, BETA, SE, FREQUENCY, P_VALUE, N, VARIANT_ID };
constexpr int N_COLUMNS = 10;

// meta_inputs.ROW_CHECKS, in order: the first failing check is the row's reason.
enum Reason : int8_t {
    USABLE = -1,
    MISSING_VALUE,
    UNKNOWN_CHROMOSOME,
    INVALID_POSITION,
    INVALID_ALLELE,
    BETA_NOT_FINITE,
    SE_MISSING,
    SE_INFINITE,
    SE_NOT_POSITIVE,
    P_OUT_OF_RANGE,
    FREQUENCY_OUT_OF_RANGE,
    N_INVALID,
    N_MISSING,
};

// meta_inputs.NA_VALUES: "", NA, #NA, NaN, nan, N/A, NULL, null, "."
bool is_na(std::string_view field) {
    switch (field.size()) {
        case 0:
            return true;
        case 1:
            return field[0] == '.';
        case 2:
            return field == "NA";
        case 3:
            return field == "#NA" || field == "NaN" || field == "nan" || field == "N/A";
        case 4:
            return field == "NULL" || field == "null";
        default:
            return false;
    }
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

std::string_view trim(std::string_view text) {
    while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
    while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
    return text;
}

char upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 32) : c; }

// A number, or NaN if missing or not a number (junk is counted by the checks, never fatal).
// Correctly rounded (std::from_chars); surrounding spaces and a leading '+' are allowed.
double parse_number(std::string_view field) {
    if (is_na(field)) return NAN;
    field = trim(field);
    if (!field.empty() && field.front() == '+') field.remove_prefix(1);
    double value = NAN;
    const char* end = field.data() + field.size();
    auto [stop, error] = std::from_chars(field.data(), end, value);
    if (stop != end) return NAN;
    if (error == std::errc::result_out_of_range) {
        // from_chars leaves the value unset: strtod gives ±inf (overflow) or ±0 (underflow).
        std::string copy(field);
        return std::strtod(copy.c_str(), nullptr);
    }
    return error == std::errc() ? value : NAN;
}

// parse_number, quicker for what most fields hold. A whole number of up to 15 digits (positions,
// sample sizes) is read digit by digit: exact, as every such number is a double.
double parse_count(std::string_view field) {
    if (field.empty() || field.size() > 15) return parse_number(field);
    int64_t value = 0;
    for (char c : field) {
        if (c < '0' || c > '9') return parse_number(field);
        value = value * 10 + (c - '0');
    }
    return static_cast<double>(value);
}

// A p-value only has to be in [0, 1]: "0." followed by digits (most of them) is, without
// parsing; anything else is parsed. Returns the value, or 0.5 for "somewhere in [0, 1)".
double parse_p_value(std::string_view field) {
    if (field.size() >= 3 && field[0] == '0' && field[1] == '.') {
        bool digits = true;
        for (size_t i = 2; i < field.size() && digits; ++i) digits = field[i] >= '0' && field[i] <= '9';
        if (digits) return 0.5;
    }
    return parse_number(field);
}

// GWAS-SSF chromosome codes 1-22, X=23, Y=24, M/MT=25, after trimming, upper-casing and
// dropping a "chr" prefix; 0 if unknown.
int16_t chromosome_code(std::string_view field) {
    field = trim(field);
    char name[8];
    if (field.size() > sizeof(name)) return 0;  // no known name is longer than "CHRMT"
    for (size_t i = 0; i < field.size(); ++i) name[i] = upper(field[i]);
    std::string_view code(name, field.size());
    if (code.substr(0, 3) == "CHR") code.remove_prefix(3);
    if (code == "X") return 23;
    if (code == "Y") return 24;
    if (code == "M" || code == "MT") return 25;
    if (code.empty() || code.size() > 2 || code[0] == '0') return 0;
    int value = 0;
    for (char c : code) {
        if (c < '0' || c > '9') return 0;
        value = value * 10 + (c - '0');
    }
    return (value >= 1 && value <= 25) ? static_cast<int16_t>(value) : 0;
}

// Non-empty and only A, C, G, T once upper-cased.
bool is_nucleotides(std::string_view allele) {
    if (allele.empty()) return false;
    for (char c : allele) {
        switch (upper(c)) {
            case 'A':
            case 'C':
            case 'G':
            case 'T':
                break;
            default:
                return false;
        }
    }
    return true;
}

bool equal_upper(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
        if (upper(a[i]) != upper(b[i])) return false;
    return true;
}

// Does the ID's last field (after its last ':' or '_'; all of it if none) equal the allele?
// `chr:pos:ref:alt` and `chr_pos_ref_alt` IDs end in the alternate allele.
bool id_ends_in(std::string_view id, std::string_view allele) {
    size_t cut = id.find_last_of(":_");
    std::string_view last = cut == std::string_view::npos ? id : id.substr(cut + 1);
    return equal_upper(last, allele);
}

struct Row {
    std::string_view field[N_COLUMNS];
};

struct ScanColumns {
    Output reason, chromosome, position, beta, se, frequency, n, alt_is_effect;
    Output effect_offsets, effect_data, other_offsets, other_data;
};

struct ScanCounts {
    Py_ssize_t parsed = 0, malformed = 0, usable = 0;
    int32_t effect_bytes = 0, other_bytes = 0;
};

int8_t check_row(const Row& row, bool need_n, int16_t& chromosome, double& position,
                 double (&value)[N_COLUMNS]) {
    for (int c : {BETA, SE, FREQUENCY}) value[c] = parse_number(row.field[c]);
    value[POSITION] = parse_count(row.field[POSITION]);
    value[N] = parse_count(row.field[N]);
    value[P_VALUE] = parse_p_value(row.field[P_VALUE]);  // only checked, never kept
    position = value[POSITION];
    const double beta = value[BETA], se = value[SE], n = value[N];
    const double frequency = value[FREQUENCY], p = value[P_VALUE];
    if (is_na(row.field[CHROMOSOME]) || std::isnan(position) || is_na(row.field[EFFECT]) ||
        is_na(row.field[OTHER]) || std::isnan(beta))
        return MISSING_VALUE;
    chromosome = chromosome_code(row.field[CHROMOSOME]);
    if (chromosome == 0) return UNKNOWN_CHROMOSOME;
    if (!std::isfinite(position) || position < 1 || position != std::floor(position))
        return INVALID_POSITION;
    if (!is_nucleotides(row.field[EFFECT]) || !is_nucleotides(row.field[OTHER]) ||
        equal_upper(row.field[EFFECT], row.field[OTHER]))
        return INVALID_ALLELE;
    if (!std::isfinite(beta)) return BETA_NOT_FINITE;
    if (std::isnan(se)) return SE_MISSING;
    if (std::isinf(se)) return SE_INFINITE;
    if (se <= 0) return SE_NOT_POSITIVE;
    if (p < 0 || p > 1) return P_OUT_OF_RANGE;
    if (frequency < 0 || frequency > 1) return FREQUENCY_OUT_OF_RANGE;
    if (n < 0 || std::isinf(n)) return N_INVALID;
    if (need_n && std::isnan(n)) return N_MISSING;
    return USABLE;
}

void append_upper(std::string_view allele, char* data, int32_t& used, int32_t* offsets,
                  Py_ssize_t row) {
    for (char c : allele) data[used++] = upper(c);
    offsets[row + 1] = used;
}

void scan_rows(std::string_view text, const std::vector<int>& column_of_field, bool need_n,
               bool has_variant_id, ScanColumns& out, ScanCounts& counts) {
    auto* reason = out.reason.as<int8_t>();
    auto* chromosome = out.chromosome.as<int16_t>();
    auto* position = out.position.as<int64_t>();
    auto* beta = out.beta.as<double>();
    auto* se = out.se.as<double>();
    auto* frequency = out.frequency.as<double>();
    auto* n = out.n.as<double>();
    auto* alt_is_effect = out.alt_is_effect.as<uint8_t>();
    auto* effect_offsets = out.effect_offsets.as<int32_t>();
    auto* other_offsets = out.other_offsets.as<int32_t>();
    effect_offsets[0] = other_offsets[0] = 0;
    const Py_ssize_t n_fields = static_cast<Py_ssize_t>(column_of_field.size());

    const char* cursor = text.data();
    const char* const text_end = cursor + text.size();
    while (cursor < text_end) {
        const char* newline = static_cast<const char*>(std::memchr(cursor, '\n', text_end - cursor));
        const char* line_end = newline ? newline : text_end;
        std::string_view line(cursor, line_end - cursor);
        cursor = newline ? newline + 1 : text_end;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.empty()) continue;  // blank lines are not rows

        Row row;
        Py_ssize_t seen = 0;
        const char* start = line.data();
        const char* const end = start + line.size();
        for (;;) {
            const char* tab = static_cast<const char*>(std::memchr(start, '\t', end - start));
            const char* stop = tab ? tab : end;
            if (seen < n_fields && column_of_field[seen] >= 0)
                row.field[column_of_field[seen]] = std::string_view(start, stop - start);
            ++seen;
            if (!tab) break;
            start = tab + 1;
        }
        if (seen != n_fields) {  // too few or too many fields: counted as missing values
            ++counts.malformed;
            continue;
        }

        int16_t code = 0;
        double pos = 0, value[N_COLUMNS];
        const int8_t verdict = check_row(row, need_n, code, pos, value);
        reason[counts.parsed++] = verdict;
        if (verdict != USABLE) continue;

        const Py_ssize_t i = counts.usable++;
        chromosome[i] = code;
        position[i] = static_cast<int64_t>(pos);
        beta[i] = value[BETA];
        se[i] = value[SE];
        frequency[i] = value[FREQUENCY];
        n[i] = value[N];
        const std::string_view id = row.field[VARIANT_ID];
        // No ID (or a missing one): the effect allele is taken to be the alternate allele.
        alt_is_effect[i] = !(has_variant_id && !is_na(id) && id_ends_in(id, row.field[OTHER]));
        append_upper(row.field[EFFECT], out.effect_data.data, counts.effect_bytes, effect_offsets, i);
        append_upper(row.field[OTHER], out.other_data.data, counts.other_bytes, other_offsets, i);
    }
}

// parse_block(text, n_fields, field_of_column, need_n) -> tuple; see meta_inputs.parse_block.
PyObject* parse_block(PyObject*, PyObject* args) {
    PyObject *text_object, *field_of_column;
    Py_ssize_t n_fields;
    int need_n;
    if (!PyArg_ParseTuple(args, "OnOp", &text_object, &n_fields, &field_of_column, &need_n))
        return nullptr;
    Buffer text;
    if (!text.get(text_object)) return nullptr;
    if (text.size() >= INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "parse_block: text block must be under 2 GB");
        return nullptr;
    }
    if (!PySequence_Check(field_of_column) || PySequence_Size(field_of_column) != N_COLUMNS) {
        PyErr_SetString(PyExc_ValueError, "parse_block: field_of_column needs 10 entries");
        return nullptr;
    }
    std::vector<int> column_of_field(n_fields > 0 ? n_fields : 0, -1);
    bool has_variant_id = false;
    for (int c = 0; c < N_COLUMNS; ++c) {
        PyObject* item = PySequence_GetItem(field_of_column, c);
        if (!item) return nullptr;
        long field = PyLong_AsLong(item);
        Py_DECREF(item);
        if (field == -1 && PyErr_Occurred()) return nullptr;
        if (field >= n_fields) {
            PyErr_SetString(PyExc_ValueError, "parse_block: a column's field is past n_fields");
            return nullptr;
        }
        if (field >= 0) column_of_field[field] = c;
        if (c == VARIANT_ID) has_variant_id = field >= 0;
    }

    std::string_view body(text.bytes(), text.size());
    Py_ssize_t lines = 1;  // the most rows there can be (a last line may lack its newline)
    for (const char* p = body.data(); (p = static_cast<const char*>(std::memchr(
                                           p, '\n', body.data() + body.size() - p)));
         ++p)
        ++lines;

    ScanColumns out;
    const bool allocated =
        out.reason.allocate(lines) && out.chromosome.allocate(lines * 2) &&
        out.position.allocate(lines * 8) && out.beta.allocate(lines * 8) &&
        out.se.allocate(lines * 8) && out.frequency.allocate(lines * 8) &&
        out.n.allocate(lines * 8) && out.alt_is_effect.allocate(lines) &&
        out.effect_offsets.allocate((lines + 1) * 4) && out.other_offsets.allocate((lines + 1) * 4) &&
        out.effect_data.allocate(text.size()) && out.other_data.allocate(text.size());
    if (!allocated) return nullptr;

    ScanCounts counts;
    Py_BEGIN_ALLOW_THREADS;
    scan_rows(body, column_of_field, need_n != 0, has_variant_id, out, counts);
    Py_END_ALLOW_THREADS;

    const Py_ssize_t u = counts.usable;
    return Py_BuildValue("nnnNNNNNNNNNNNN", counts.parsed, counts.malformed, u,
                         out.reason.finish(counts.parsed), out.chromosome.finish(u * 2),
                         out.position.finish(u * 8), out.beta.finish(u * 8), out.se.finish(u * 8),
                         out.frequency.finish(u * 8), out.n.finish(u * 8),
                         out.alt_is_effect.finish(u), out.effect_offsets.finish((u + 1) * 4),
                         out.effect_data.finish(counts.effect_bytes),
                         out.other_offsets.finish((u + 1) * 4),
                         out.other_data.finish(counts.other_bytes));
}

// ----------------------------------------------------------------------------------------
// Writing rows (meta_format.format_rows)
// ----------------------------------------------------------------------------------------

constexpr int SIGNIFICANT_DIGITS = 10;
constexpr Py_ssize_t MAX_NUMBER_BYTES = 48;  // the most any number format below writes
constexpr double TAIL_NEG_LOG10_P = 300.0;  // meta_format.TAIL_NEG_LOG10_P
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
    const std::string_view kind(PyUnicode_AsUTF8(PyTuple_GET_ITEM(spec, 0)));
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

// format_rows(n_rows, columns) -> bytes; see meta_format.format_rows.
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

PyMethodDef methods[] = {
    {"parse_block", parse_block, METH_VARARGS,
     "Parse and check the GWAS-SSF rows of a text block (see meta_inputs.parse_block)."},
    {"format_rows", format_rows, METH_VARARGS,
     "Write result rows as tab-separated text (see meta_format.format_rows)."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_tsv", "GWAS-SSF text kernels.", -1, methods, nullptr, nullptr, nullptr, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__tsv(void) {
    PyObject* kernels = PyModule_Create(&module);
    // The compiler that built the kernels, for the provenance record (versions.py).
    if (kernels && PyModule_AddStringConstant(kernels, "COMPILER", "gcc " __VERSION__) != 0) {
        Py_DECREF(kernels);
        return nullptr;
    }
    return kernels;
}
