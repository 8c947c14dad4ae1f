/* Backend registry: names to op tables. The CUDA table lives in kernels/cuda/
 * and is linked in only when the build found nvcc (QL_HAVE_CUDA). */
#include <string.h>

#include "kernels/backend.h"

#ifdef QL_HAVE_CUDA
#include "kernels/cuda_api.h"
/* Defined in kernels/cuda/; NULL with a message when no device is visible. */
const ql_backend *ql_backend_cuda_impl(void);
#endif

const ql_backend *ql_backend_cuda(void) {
#ifdef QL_HAVE_CUDA
    return ql_backend_cuda_impl();
#else
    ql_error(QL_EUNSUPPORTED,
             "backend \"cuda\": this build has no CUDA backend (nvcc was not found when "
             "configuring, or QL_CUDA=OFF); use \"cpu\" or rebuild with CUDA");
    return NULL;
#endif
}

const char *ql_backend_resolve_name(const char *name) {
    if (!name || strcmp(name, "auto") != 0) return name;
#ifdef QL_HAVE_CUDA
    /* Counting devices initialises the driver but creates no context, so a
     * rank can still bind its own GPU afterwards. */
    if (ql_cuda_device_count() > 0) return "cuda";
#endif
    return "cpu";
}

const ql_backend *ql_backend_by_name(const char *name) {
    name = ql_backend_resolve_name(name);
    if (!name) {
        ql_error(QL_EINVAL, "backend: no name given (expected auto, cpu, cpu-ref or cuda)");
        return NULL;
    }
    if (strcmp(name, "cpu") == 0) return ql_backend_cpu();
    if (strcmp(name, "cpu-ref") == 0) return ql_backend_cpu_ref();
    if (strcmp(name, "cuda") == 0) return ql_backend_cuda();
    ql_error(QL_EINVAL, "backend \"%s\" is unknown (expected auto, cpu, cpu-ref or cuda)", name);
    return NULL;
}
