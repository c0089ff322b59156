// Reading GWAS-SSF rows: split, parse and check every row of a block of text in one pass.
// The rules are meta/inputs.py's: DropReason order, NA_VALUES, chromosome codes.

#include <charconv>
#include <iterator>
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

// The columns the meta-analysis reads, in the order of meta.inputs.KERNEL_COLUMNS.
enum Column { CHROMOSOME, POSITION, EFFECT, OTHER, BETA, SE, FREQUENCY, P_VALUE, N, VARIANT_ID };
constexpr int N_COLUMNS = 10;

// meta.inputs.ROW_CHECKS, in order: the first failing check is the row's reason.
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

// meta.inputs.NA_VALUES: "", NA, #NA, NaN, nan, N/A, NULL, null, "."
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

}  // namespace

// parse_block(text, n_fields, field_of_column, need_n) -> tuple; see meta.inputs.parse_block.
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
    PyObject* columns[] = {
        out.reason.finish(counts.parsed),
        out.chromosome.finish(u * 2),
        out.position.finish(u * 8),
        out.beta.finish(u * 8),
        out.se.finish(u * 8),
        out.frequency.finish(u * 8),
        out.n.finish(u * 8),
        out.alt_is_effect.finish(u),
        out.effect_offsets.finish((u + 1) * 4),
        out.effect_data.finish(counts.effect_bytes),
        out.other_offsets.finish((u + 1) * 4),
        out.other_data.finish(counts.other_bytes),
    };
    for (PyObject* column : columns) {
        if (column) continue;
        for (PyObject* other : columns) Py_XDECREF(other);
        return nullptr;
    }
    PyObject* result = PyTuple_New(3 + std::size(columns));
    if (!result) {
        for (PyObject* column : columns) Py_DECREF(column);
        return nullptr;
    }
    PyTuple_SET_ITEM(result, 0, PyLong_FromSsize_t(counts.parsed));
    PyTuple_SET_ITEM(result, 1, PyLong_FromSsize_t(counts.malformed));
    PyTuple_SET_ITEM(result, 2, PyLong_FromSsize_t(u));
    for (size_t i = 0; i < std::size(columns); ++i) PyTuple_SET_ITEM(result, 3 + i, columns[i]);
    for (Py_ssize_t i = 0; i < 3; ++i) {
        if (!PyTuple_GET_ITEM(result, i)) {
            Py_DECREF(result);
            return nullptr;
        }
    }
    return result;
}

}  // namespace tsv
