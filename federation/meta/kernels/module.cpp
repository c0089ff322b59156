// `federation._tsv`: the kernels of kernels.h as one Python extension module.

#include "kernels.h"

namespace {

PyMethodDef methods[] = {
    {"parse_block", tsv::parse_block, METH_VARARGS,
     "Parse and check the GWAS-SSF rows of a text block (see meta.inputs.parse_block)."},
    {"format_rows", tsv::format_rows, METH_VARARGS,
     "Write result rows as tab-separated text (see meta.format.format_rows)."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_tsv", "GWAS-SSF text kernels.", -1, methods, nullptr, nullptr,
    nullptr, nullptr};

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
