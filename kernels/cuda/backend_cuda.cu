/* The "cuda" entry of the backend registry (kernels/backend.c calls
 * ql_backend_cuda_impl when the build has CUDA). The op table is not complete
 * yet: kernels/cuda/ has the 4-bit dequantize (kernels/cuda_api.h) but not the
 * GEMM, attention, norm or optimizer kernels, so the backend reports itself
 * unavailable rather than hand out a table with missing entries. */
#include "kernels/cuda_api.h"
#include "kernels/cuda/cuda_util.h"

extern "C" {
#include "kernels/backend.h"
}

extern "C" const ql_backend *ql_backend_cuda_impl(void) {
    if (ql_cuda_device_count() == 0) {
        ql_error(QL_EUNSUPPORTED, "backend \"cuda\": no CUDA device is visible (no driver, no "
                                  "GPU, or CUDA_VISIBLE_DEVICES hides them); use \"cpu\"");
        return NULL;
    }
    ql_error(QL_EUNSUPPORTED,
             "backend \"cuda\": not complete yet (kernels/cuda/ has only the 4-bit dequantize); "
             "use \"cpu\"");
    return NULL;
}
