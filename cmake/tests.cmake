# Tests are found by name: tests/<label>/test_*.c (C programs) and
# tests/<label>/test_*.sh (scripts). Labels: unit, mpi, gpu, e2e.
# Exit code 77 means "skipped" (e.g. a GPU test on a machine without one).

function(ql_add_c_tests label)
  file(GLOB srcs CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/${label}/test_*.c)
  foreach(src ${srcs})
    get_filename_component(name ${src} NAME_WE)
    set(target ${label}_${name})
    add_executable(${target} ${src})
    target_link_libraries(${target} PRIVATE qlora_core)
    target_include_directories(${target} PRIVATE ${CMAKE_SOURCE_DIR}/tests)
    if(label STREQUAL "mpi")
      add_test(NAME ${target} COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} 2
               --allow-run-as-root --oversubscribe $<TARGET_FILE:${target}>)
    else()
      add_test(NAME ${target} COMMAND ${target})
    endif()
    set_tests_properties(${target} PROPERTIES LABELS ${label} SKIP_RETURN_CODE 77
      ENVIRONMENT "QL_SOURCE_DIR=${CMAKE_SOURCE_DIR};QL_BUILD_DIR=${CMAKE_BINARY_DIR}")
  endforeach()
endfunction()

function(ql_add_sh_tests label)
  file(GLOB scripts CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/${label}/test_*.sh)
  foreach(s ${scripts})
    get_filename_component(name ${s} NAME_WE)
    set(target ${label}_${name})
    add_test(NAME ${target} COMMAND bash ${s})
    set_tests_properties(${target} PROPERTIES LABELS ${label} SKIP_RETURN_CODE 77
      ENVIRONMENT "QLORA=$<TARGET_FILE:qlora>;QL_SOURCE_DIR=${CMAKE_SOURCE_DIR};QL_BUILD_DIR=${CMAKE_BINARY_DIR}")
    # Each Slurm test runs its own private cluster (own ports and state), but
    # two side by side would share 2 cores and stretch the preemption timing.
    if(name MATCHES "^test_slurm_")
      set_tests_properties(${target} PROPERTIES RESOURCE_LOCK slurm_cluster TIMEOUT 300)
    endif()
  endforeach()
endfunction()

foreach(label unit mpi e2e)
  ql_add_c_tests(${label})
  ql_add_sh_tests(${label})
endforeach()
# GPU tests are built wherever the CUDA backend is; without a device they exit 77.
if(QL_HAVE_CUDA)
  ql_add_c_tests(gpu)
  ql_add_sh_tests(gpu)
endif()
# The emulator's own cuBLASLt stand-in against a plain reference.
if(QL_CUDA_EMU)
  # A step on the emulated device takes seconds, not milliseconds.
  set_property(TEST gpu_test_train_qlora_cuda APPEND PROPERTY ENVIRONMENT QL_GPU_RESUME_STEPS=30)
  # The NCCL device communicator over the emulator's MPI-backed NCCL, each
  # rank with an emulated device of its own (tests/gpu/run.sh runs the same
  # program at one rank on a real GPU).
  foreach(np 2 3)
    add_test(NAME gpu_test_nccl_comm_np${np} COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG}
             ${np} --allow-run-as-root --oversubscribe -x QL_EMU_DEVICES
             $<TARGET_FILE:gpu_test_nccl_comm>)
    set_tests_properties(gpu_test_nccl_comm_np${np} PROPERTIES LABELS gpu SKIP_RETURN_CODE 77
      TIMEOUT 300 ENVIRONMENT "QL_EMU_DEVICES=${np};OMP_NUM_THREADS=1")
  endforeach()
  # Two ranks on one device: NCCL's duplicate-GPU refusal must reach both.
  add_test(NAME gpu_test_nccl_comm_shared_device COMMAND ${MPIEXEC_EXECUTABLE}
           ${MPIEXEC_NUMPROC_FLAG} 2 --allow-run-as-root --oversubscribe -x QL_EMU_DEVICES
           -x QL_TEST_NCCL_SHARED_DEVICE $<TARGET_FILE:gpu_test_nccl_comm>)
  set_tests_properties(gpu_test_nccl_comm_shared_device PROPERTIES LABELS gpu SKIP_RETURN_CODE 77
    TIMEOUT 300 ENVIRONMENT "QL_EMU_DEVICES=1;QL_TEST_NCCL_SHARED_DEVICE=1;OMP_NUM_THREADS=1")
  add_executable(test_emu_cublaslt kernels/cuda/emu/test_emu_cublaslt.cpp
    kernels/cuda/emu/emu_cublaslt.cpp kernels/cuda/emu/emu_runtime.cpp)
  target_include_directories(test_emu_cublaslt BEFORE PRIVATE
    ${CMAKE_SOURCE_DIR}/kernels/cuda/emu/include)
  target_include_directories(test_emu_cublaslt PRIVATE ${CMAKE_SOURCE_DIR})
  target_compile_definitions(test_emu_cublaslt PRIVATE QL_CUDA_EMU=1)
  set_target_properties(test_emu_cublaslt PROPERTIES CXX_STANDARD 17)
  add_test(NAME emu_cublaslt COMMAND test_emu_cublaslt)
  set_tests_properties(emu_cublaslt PROPERTIES LABELS gpu)
  # The engine (fibers, barriers, warp exchanges, launch limits) on kernels
  # written like kernels/cuda/*.cu; no link to qlora_core (QL_CUDA_TRY unused).
  add_executable(test_emu_engine kernels/cuda/emu/test_emu_engine.cpp
    kernels/cuda/emu/emu_runtime.cpp)
  target_include_directories(test_emu_engine BEFORE PRIVATE
    ${CMAKE_SOURCE_DIR}/kernels/cuda/emu/include)
  target_include_directories(test_emu_engine PRIVATE ${CMAKE_SOURCE_DIR})
  target_compile_definitions(test_emu_engine PRIVATE QL_CUDA_EMU=1)
  target_compile_options(test_emu_engine PRIVATE -ffp-contract=off -fno-strict-aliasing)
  set_target_properties(test_emu_engine PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON)
  add_test(NAME emu_engine COMMAND test_emu_engine)
  set_tests_properties(emu_engine PROPERTIES LABELS gpu)
  # The emulated NCCL against NCCL's documented behaviour, alone and at 2
  # ranks, with two emulated devices per process.
  add_executable(test_emu_nccl kernels/cuda/emu/test_emu_nccl.cpp kernels/cuda/emu/emu_nccl.cpp
    kernels/cuda/emu/emu_runtime.cpp)
  target_include_directories(test_emu_nccl BEFORE PRIVATE
    ${CMAKE_SOURCE_DIR}/kernels/cuda/emu/include)
  target_compile_definitions(test_emu_nccl PRIVATE QL_CUDA_EMU=1)
  target_link_libraries(test_emu_nccl PRIVATE MPI::MPI_C)
  set_target_properties(test_emu_nccl PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON)
  add_test(NAME emu_nccl COMMAND test_emu_nccl)
  add_test(NAME emu_nccl_np2 COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} 2
           --allow-run-as-root --oversubscribe -x QL_EMU_DEVICES $<TARGET_FILE:test_emu_nccl>)
  set_tests_properties(emu_nccl emu_nccl_np2 PROPERTIES LABELS gpu TIMEOUT 120
    ENVIRONMENT "QL_EMU_DEVICES=2")
endif()
