# Detects CUDA runtime + NCCL for the optional NCCL communicator (XPAND_WITH_NCCL = AUTO | ON | OFF).
# Defines XPAND_HAVE_NCCL and the imported target xpand::nccl. The CPU build is complete without them.
set(XPAND_HAVE_NCCL OFF)
string(TOUPPER "${XPAND_WITH_NCCL}" _xpand_nccl_mode)
if(NOT _xpand_nccl_mode MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "XPAND_WITH_NCCL must be AUTO, ON or OFF (got '${XPAND_WITH_NCCL}')")
endif()
if(NOT _xpand_nccl_mode STREQUAL "OFF")
  set(_xpand_cuda_hints $ENV{CUDA_HOME} $ENV{NCCL_HOME} /usr/local/cuda /usr)
  find_path(XPAND_NCCL_INCLUDE_DIR nccl.h HINTS ${_xpand_cuda_hints} PATH_SUFFIXES include)
  find_path(XPAND_CUDART_INCLUDE_DIR cuda_runtime_api.h HINTS ${_xpand_cuda_hints} PATH_SUFFIXES include)
  find_library(XPAND_NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${_xpand_cuda_hints} PATH_SUFFIXES lib64 lib lib/x86_64-linux-gnu)
  find_library(XPAND_CUDART_LIBRARY cudart HINTS ${_xpand_cuda_hints} PATH_SUFFIXES lib64 lib lib/x86_64-linux-gnu)
  if(XPAND_NCCL_INCLUDE_DIR AND XPAND_CUDART_INCLUDE_DIR AND XPAND_NCCL_LIBRARY AND XPAND_CUDART_LIBRARY)
    set(XPAND_HAVE_NCCL ON)
    add_library(xpand::nccl INTERFACE IMPORTED)
    set_target_properties(xpand::nccl PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${XPAND_NCCL_INCLUDE_DIR};${XPAND_CUDART_INCLUDE_DIR}"
      INTERFACE_LINK_LIBRARIES "${XPAND_NCCL_LIBRARY};${XPAND_CUDART_LIBRARY}")
    message(STATUS "xpand: NCCL backend enabled (${XPAND_NCCL_LIBRARY})")
  elseif(_xpand_nccl_mode STREQUAL "ON")
    message(FATAL_ERROR "XPAND_WITH_NCCL=ON but CUDA runtime/NCCL were not found "
                        "(looked in CUDA_HOME, NCCL_HOME, /usr/local/cuda, /usr)")
  else()
    message(STATUS "xpand: NCCL not found, building the CPU/MPI backend only")
  endif()
endif()
